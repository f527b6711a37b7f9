"""`tunelab chat`: talk to a run's model (base + adapter, or merged) with the template used in training."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ChatSession:
    model: object
    tokenizer: object
    max_new_tokens: int
    messages: list[dict[str, str]] = field(default_factory=list)


def load_chat_model(target: str, system: str | None = None, max_new_tokens: int = 256) -> ChatSession:
    from tunelab.model.decode import hold_packed_weights
    from tunelab.model.targets import load_target

    model, tokenizer, resolved = load_target(target)
    hold_packed_weights(model)  # once for the session, not at every turn
    if resolved.run is not None and system is None:
        system = resolved.run.training_system_prompt()
    messages = [{"role": "system", "content": system}] if system else []  # --system "" chats without one
    return ChatSession(model, tokenizer, max_new_tokens, messages)


def reply(session: ChatSession, user_text: str) -> str:
    from tunelab.model.generate import generate_batch

    session.messages.append({"role": "user", "content": user_text})
    prompt = session.tokenizer.apply_chat_template(session.messages, add_generation_prompt=True, tokenize=False)
    ids = session.tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer = generate_batch(session.model, session.tokenizer, [ids], session.max_new_tokens)[0]["text"]
    session.messages.append({"role": "assistant", "content": answer})
    return answer


def one_answer(session: ChatSession, prompt: str) -> str:
    return reply(session, prompt)


def chat_loop(session: ChatSession) -> None:
    print("Type a message; /reset clears the conversation, /exit or Ctrl-D quits.")
    while True:
        try:
            text = input("you> ").strip()
        except EOFError:
            print()
            return
        if text in {"/exit", "/quit"}:
            return
        if text == "/reset":
            session.messages = [m for m in session.messages if m["role"] == "system"]
            continue
        if text:
            print(f"model> {reply(session, text)}")
