"""English and Chinese words of the UI. Each tab module keeps its own table `TEXT = {key: (english, chinese)}`;
`Labels` merges them, and remembers which component shows which key so a language switch can relabel the page.

Components carry stable `elem_id`s, so browser tests never depend on the language.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

LANGUAGES = {"en": "English", "zh": "中文"}

TEXT: dict[str, tuple[str, str]] = {
    "title": ("tunelab — fine-tune, evaluate, export, serve", "tunelab —— 微调、评估、导出、部署"),
    "language": ("Language", "语言"),
    "tab.data": ("Data", "数据"),
    "tab.train": ("Train", "训练"),
    "tab.runs": ("Runs", "运行记录"),
    "tab.evaluate": ("Evaluate", "评估"),
    "tab.chat": ("Chat", "对话"),
    "tab.export": ("Export & serve", "导出与部署"),
    "workspace": ("Workspace", "工作区"),
}

# Chinese for the recipe form's section titles and most-used keys (the key itself stays as the label: it is what the
# recipe YAML says; the description is translated).
FIELD_ZH: dict[str, str] = {
    "": "运行", "model": "模型", "data": "数据", "method": "方法", "train": "训练参数", "eval": "评估",
    "export": "导出", "name": "运行名称", "output_dir": "输出目录", "seed": "随机种子",
    "model.name": "内置别名、本地 Hugging Face 目录、.gguf 文件或 Hub ID",
    "data.sources": "训练数据文件，每行一个", "data.registry": "LLaMA-Factory 的 dataset_info.json",
    "data.datasets": "注册表中的数据集名称", "data.validation": "验证集：训练数据的比例、文件，或留空",
    "data.test": "留出的测试文件：训练前后各评估一次", "data.max_length": "超过此长度的样本会被截断（并计数）",
    "data.leakage": "测试/验证记录与训练记录重复时：拒绝、剔除或允许", "method.type": "训练方式",
    "train.learning_rate": "峰值学习率", "train.num_train_epochs": "训练轮数", "train.max_steps": "最多训练步数",
    "train.per_device_train_batch_size": "每步样本数", "train.save_steps": "每 N 步保存可恢复的检查点",
    "train.eval_steps": "每 N 步计算验证损失", "eval.metrics": "测试集上的指标",
    "eval.max_new_tokens": "生成答案的最大 token 数", "export.merge": "把 LoRA 适配器合并进基础模型并验证",
    "data.system": "给没有系统提示的记录加上的系统提示", "data.audit": "训练前审计数据，拒绝泄漏或无效的数据",
    "data.max_invalid_fraction": "可跳过（并在审计中列出）而不拒绝的无效记录比例",
    "data.near_threshold": "近似重复的 Jaccard 阈值", "data.contamination_against": "用于检查污染的基准文件或目录",
    "data.mix_total": "混合后训练集的大小（默认不复制记录）", "method.trainable_layers": "只训练最后 N 个解码层",
    "train.gradient_accumulation_steps": "梯度累加的步数", "train.lr_scheduler_type": "学习率调度",
    "train.warmup_steps": "预热步数（小于 1 表示比例）", "train.logging_steps": "每 N 步在 metrics.jsonl 记一行",
    "train.early_stopping_patience": "验证损失连续 N 次未改善时停止（需要验证集）",
    "train._extra": "更多 train: 键（任意 trl.SFTConfig 字段），YAML 格式",
    "eval.base": "训练前在测试集上评估原始模型", "eval.k_shot": "k_shot 基线的提示里放入的训练样例数",
    "eval.baselines": "对比基线：原始模型（base）、带任务说明的提示（zero_shot）、带相似样例的提示（k_shot）",
    "eval.json_schema": "json_schema 指标使用的 JSON Schema 文件",
    "eval.forgetting.task": "probe（内置）、mmlu、cmmlu、ceval、arc_easy、arc_challenge，或一个路径",
    "eval.forgetting.data": "mmlu、cmmlu、ceval 和 arc 的基准目录", "eval.forgetting.scoring": "默认：任务自身的方式",
    "eval.forgetting.limit": "每个科目的题目数", "eval.forgetting.threshold": "判定遗忘的准确率下降（百分点）",
    "reward": "强化学习阶段（grpo、rloo、ppo）的奖励，YAML 列表，例如 - {type: field_accuracy}",
}  # fmt: skip


@dataclass
class Labels:
    """Merged word tables and the components whose text follows the chosen language."""

    tables: list[dict[str, tuple[str, str]]] = field(default_factory=lambda: [TEXT])
    language: str = "en"
    _followers: list[tuple[Any, str, str]] = field(default_factory=list)

    def add(self, table: dict[str, tuple[str, str]]) -> None:
        self.tables.append(table)

    def text(self, key: str, language: str | None = None) -> str:
        for table in reversed(self.tables):
            if key in table:
                english, chinese = table[key]
                return chinese if (language or self.language) == "zh" else english
        return key

    def follow(self, component: Any, key: str, attribute: str = "label") -> Any:
        """Relabel `component` (its `label`, or `value` for buttons and headings) when the language changes."""
        self._followers.append((component, key, attribute))
        return component

    def components(self) -> list[Any]:
        return [component for component, _, _ in self._followers]

    def updates(self, language: str) -> list[dict[str, Any]]:
        import gradio as gr

        return [gr.update(**{attribute: self.text(key, language)}) for _, key, attribute in self._followers]


def field_info(path: str, english: str, language: str) -> str:
    """A form field's description in the chosen language (English when no translation is known)."""
    return FIELD_ZH.get(path, english) if language == "zh" else english
