"""Generate the quickstart task: free-text customer orders (English or Chinese) -> a fixed-schema JSON object.

The data is synthetic and fully deterministic so that the committed files can be checked byte for byte and anyone
can regenerate them. It is shaped to be learnable by a ~135M model with a short LoRA run: every answer value is
either copied verbatim from the text (customer, city) or drawn from a small closed set (product, quantity, size,
color, express). Variety comes from phrasing, word order, style (chat, email, note, form) and occasional
distractors (a previous order, a rejected color or size, a city that is not the destination).

Usage: python examples/quickstart/generate.py [--out-dir DIR] [--seed N]
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

SEED = 1234
N_TRAIN = 640
N_TEST = 120
DISTRACTOR_RATE = 0.22
EXPRESS_RATE = 0.35
COLOR_RATE = 0.7
SIZED_PRODUCT_RATE = 0.45
SIZE_MENTION_RATE = 0.85
TEST_RESERVED_NAME_RATE = 0.5
EN_WORDS = (15, 60)
ZH_CHARS = (15, 70)

SYSTEM = (
    "Extract the order as JSON with keys customer, product, quantity, size, color, city, express. "
    "Use null when a value is not given."
)
KEYS = ("customer", "product", "quantity", "size", "color", "city", "express")


@dataclass(frozen=True)
class Product:
    """A catalog item: canonical English key plus the surface forms orders may use."""

    key: str
    en: tuple[tuple[str, str], ...]  # (singular, plural) English surface forms; the first is the canonical key
    zh: tuple[str, ...]
    measure: str  # Chinese measure word (量词) used with a count
    sized: bool


CATALOG: tuple[Product, ...] = (
    Product(
        "t-shirt", (("t-shirt", "t-shirts"), ("tee", "tees"), ("T-shirt", "T-shirts")), ("T恤", "短袖T恤"), "件", True
    ),
    Product("hoodie", (("hoodie", "hoodies"),), ("卫衣", "连帽卫衣"), "件", True),
    Product("jacket", (("jacket", "jackets"),), ("夹克", "夹克外套"), "件", True),
    Product("sweater", (("sweater", "sweaters"),), ("毛衣",), "件", True),
    Product("polo shirt", (("polo shirt", "polo shirts"), ("polo", "polos")), ("Polo衫", "polo衫"), "件", True),
    Product("cap", (("cap", "caps"), ("baseball cap", "baseball caps")), ("棒球帽", "鸭舌帽"), "顶", False),
    Product("scarf", (("scarf", "scarves"),), ("围巾",), "条", False),
    Product("backpack", (("backpack", "backpacks"),), ("背包", "双肩包"), "个", False),
    Product("tote bag", (("tote bag", "tote bags"), ("tote", "totes")), ("帆布包", "帆布袋"), "个", False),
    Product("coffee mug", (("coffee mug", "coffee mugs"), ("mug", "mugs")), ("马克杯", "咖啡杯"), "个", False),
    Product("water bottle", (("water bottle", "water bottles"),), ("水壶", "运动水壶"), "个", False),
    Product("notebook", (("notebook", "notebooks"),), ("笔记本", "记事本"), "本", False),
    Product("umbrella", (("umbrella", "umbrellas"),), ("雨伞", "折叠伞"), "把", False),
    Product("phone case", (("phone case", "phone cases"),), ("手机壳",), "个", False),
    Product("keychain", (("keychain", "keychains"),), ("钥匙扣", "钥匙链"), "个", False),
)
SIZED = tuple(p for p in CATALOG if p.sized)
UNSIZED = tuple(p for p in CATALOG if not p.sized)

COLORS_ZH = {
    "black": "黑色",
    "white": "白色",
    "red": "红色",
    "blue": "蓝色",
    "green": "绿色",
    "gray": "灰色",
    "pink": "粉色",
    "yellow": "黄色",
}
COLORS = tuple(COLORS_ZH)
SIZES = ("S", "M", "L", "XL")
SIZE_WORDS_EN = {"S": "small", "M": "medium", "L": "large", "XL": "extra large"}
SIZE_FORMS_ZH = {
    "S": ("S码", "S号", "小号"),
    "M": ("M码", "M号", "中号"),
    "L": ("L码", "L号", "大号"),
    "XL": ("XL码", "XL号", "加大号"),
}
NUMBERS_EN = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
NUMBERS_ZH = ("零", "一", "两", "三", "四", "五", "六", "七", "八", "九", "十")

CITIES_EN = (
    "Seattle", "Austin", "Boston", "Denver", "Chicago", "Portland", "Atlanta", "Miami", "Phoenix", "San Diego",
    "Dallas", "Houston", "Nashville", "Toronto", "Vancouver", "London", "Manchester", "Dublin", "Sydney",
    "Melbourne", "New York", "Los Angeles", "San Francisco", "Philadelphia", "Minneapolis",
)  # fmt: skip
CITIES_ZH = (
    "北京", "上海", "广州", "深圳", "杭州", "成都", "武汉", "南京", "西安", "重庆", "天津", "苏州", "长沙",
    "郑州", "青岛", "厦门", "大连", "沈阳", "昆明", "合肥", "福州", "济南", "哈尔滨", "宁波", "无锡",
)  # fmt: skip

# Names are first x last (English) or surname + given name (Chinese). Names built from a reserved part never
# appear in train, so the test set checks copying of unseen names rather than memorisation.
FIRST_EN = (
    "Maria", "James", "Emily", "Daniel", "Sophie", "Michael", "Olivia", "David", "Hannah", "Lucas", "Grace",
    "Ethan", "Chloe", "Ryan", "Laura", "Kevin", "Anna", "Thomas", "Nina", "Oscar", "Julia", "Sam", "Priya",
    "Omar", "Rachel", "Leo", "Fatima", "Jack", "Elena", "Noah",
)  # fmt: skip
FIRST_EN_TEST = ("Beatrice", "Tobias", "Ingrid", "Rafael", "Yuki", "Camille")
LAST_EN = (
    "Lopez", "Smith", "Chen", "Johnson", "Garcia", "Brown", "Nguyen", "Miller", "Patel", "Wilson", "Kim",
    "Anderson", "Martin", "Rossi", "Murphy", "Walker", "Novak", "Clarke", "Silva", "Evans", "Khan", "Baker",
)  # fmt: skip
LAST_EN_TEST = ("Okafor", "Lindqvist", "Moreau", "Takahashi")
SURNAMES_ZH = (
    "王", "李", "张", "刘", "陈", "杨", "黄", "赵", "周", "吴", "徐", "孙", "马", "朱", "胡", "郭", "何", "林",
    "高", "罗",
)  # fmt: skip
SURNAMES_ZH_TEST = ("欧阳", "诸葛", "邓", "韩")
GIVEN_ZH = (
    "芳", "伟", "娜", "敏", "静", "磊", "洋", "勇", "艳", "杰", "涛", "明", "超", "秀英", "丽", "强", "军",
    "婷", "雪", "晨", "浩", "宇", "欣怡", "子涵", "梓萱", "建国", "嘉怡", "一鸣", "思远", "晓东",
)  # fmt: skip
GIVEN_ZH_TEST = ("若曦", "志豪", "雨桐", "俊杰", "佳琪")


@dataclass(frozen=True)
class Order:
    """The ground-truth order; its answer() is the assistant target."""

    customer: str
    product: Product
    quantity: int
    size: str | None
    color: str | None
    city: str
    express: bool

    def answer(self) -> dict:
        """The JSON object in the fixed key order (KEYS)."""
        return {
            "customer": self.customer,
            "product": self.product.key,
            "quantity": self.quantity,
            "size": self.size,
            "color": self.color,
            "city": self.city,
            "express": self.express,
        }


NamePicker = Callable[[random.Random, str], str]


def full_names(lang: str, test_only: bool) -> list[str]:
    """All names of one language; test_only=True gives those using a reserved part, False those that do not."""
    if lang == "en":
        firsts, lasts, sep = (FIRST_EN, LAST_EN, " ")
        firsts_t, lasts_t = FIRST_EN_TEST, LAST_EN_TEST
    else:
        firsts, lasts, sep = (SURNAMES_ZH, GIVEN_ZH, "")
        firsts_t, lasts_t = SURNAMES_ZH_TEST, GIVEN_ZH_TEST
    if not test_only:
        return [f"{a}{sep}{b}" for a in firsts for b in lasts]
    return [f"{a}{sep}{b}" for a in firsts + firsts_t for b in lasts + lasts_t if a in firsts_t or b in lasts_t]


def train_name_picker() -> NamePicker:
    """Train draws only from names with no reserved part."""
    pools = {lang: full_names(lang, test_only=False) for lang in ("en", "zh")}
    return lambda rng, lang: rng.choice(pools[lang])


def test_name_picker() -> NamePicker:
    """Test mixes reserved (never seen in train) names with ordinary ones."""
    seen = {lang: full_names(lang, test_only=False) for lang in ("en", "zh")}
    reserved = {lang: full_names(lang, test_only=True) for lang in ("en", "zh")}

    def pick(rng: random.Random, lang: str) -> str:
        pool = reserved if rng.random() < TEST_RESERVED_NAME_RATE else seen
        return rng.choice(pool[lang])

    return pick


def sample_order(rng: random.Random, lang: str, pick_name: NamePicker) -> Order:
    """Draw the field values; size only for apparel, and sometimes left unsaid (-> null)."""
    product = rng.choice(SIZED if rng.random() < SIZED_PRODUCT_RATE else UNSIZED)
    size = rng.choice(SIZES) if product.sized and rng.random() < SIZE_MENTION_RATE else None
    color = rng.choice(COLORS) if rng.random() < COLOR_RATE else None
    quantity = rng.choice((1, 1, 1, 2, 2, 2, 3, 3, 4, 5, 6, 7, 8, 9, 10))
    city = rng.choice(CITIES_EN if lang == "en" else CITIES_ZH)
    return Order(pick_name(rng, lang), product, quantity, size, color, city, rng.random() < EXPRESS_RATE)


def other(rng: random.Random, options: tuple[str, ...], not_this: str | None) -> str:
    """A value from options that differs from not_this: the material for distractors."""
    return rng.choice([o for o in options if o != not_this])


# ---------------------------------------------------------------- English


def en_article(word: str) -> str:
    """'a' or 'an' for the word that follows."""
    return "an" if word[0].lower() in "aeiou" else "a"


def en_count(rng: random.Random, quantity: int, next_word: str) -> str:
    """A quantity as digits or words; quantity 1 may also be an article."""
    if quantity == 1:
        return rng.choice((en_article(next_word), "one", "1"))
    return str(quantity) if rng.random() < 0.5 else NUMBERS_EN[quantity]


def en_size_tail(rng: random.Random, size: str) -> str:
    """A size mention that follows the noun phrase."""
    word = SIZE_WORDS_EN[size]
    return rng.choice((f", size {size}", f" in size {size}", f" in {word}", f" ({size})", f", size {word}"))


def en_item(rng: random.Random, order: Order, forms: tuple[str, str]) -> str:
    """The noun phrase for what is ordered, in one of several word orders."""
    q, size, color = order.quantity, order.size, order.color
    noun = forms[0] if q == 1 else forms[1]
    pattern = rng.randrange(5)
    if pattern == 0 or (pattern == 1 and color is None) or (pattern == 2 and size is None):
        head = f"{color} {noun}" if color else noun
        text = f"{en_count(rng, q, head)} {head}"
        return text + (en_size_tail(rng, size) if size else "")
    if pattern == 1:
        return f"{en_count(rng, q, noun)} {noun} in {color}" + (en_size_tail(rng, size) if size else "")
    if pattern == 2:
        adjective = rng.choice(("XL", "extra large")) if size == "XL" else SIZE_WORDS_EN[size]
        count = "one" if q == 1 else en_count(rng, q, adjective)
        return f"{count} {adjective} " + (f"{color} {noun}" if color else noun)
    extras = [e for e in (color, f"size {size}" if size else None) if e]
    if pattern == 3:
        return f"{forms[0]} x{q}" + "".join(f", {e}" for e in extras)
    return f"{q} x {forms[0]}" + (f" ({', '.join(extras)})" if extras else "")


EN_WANT = (
    "I'd like to order {item}.",
    "I want to buy {item}.",
    "Please send me {item}.",
    "Could I get {item}?",
    "I'd like {item}, please.",
    "Can you ship {item}?",
    "I would like to purchase {item}.",
    "Please put me down for {item}.",
)
EN_PREVIOUS = (
    "Last time I ordered {previous}.",
    "My previous order was {previous}, which was great.",
    "I already bought {previous} last month.",
)
EN_WANT_AFTER_PREVIOUS = ("This time I'd like {item}.", "Now I want {item}.", "This time please send {item}.")
EN_SHIP = (
    "Please ship to {city}.",
    "Ship it to {city}.",
    "Deliver to {city}, please.",
    "Send it to {city}.",
    "The delivery address is in {city}.",
    "I'm based in {city}.",
    "Delivery city: {city}.",
    "It goes to {city}.",
)
EN_SHIP_CITY_DISTRACTOR = (
    "I live in {other} but please ship to {city}.",
    "Not to {other} this time, send it to {city}.",
    "I'm visiting {other} right now, so deliver to {city}.",
    "My billing address is in {other}, but ship to {city}.",
)
EN_EXPRESS = (
    "Express shipping, please.",
    "Please send it express.",
    "I need it urgently, so express delivery please.",
    "Rush delivery please!",
    "Can you use express shipping?",
    "It's urgent, please expedite.",
    "Need it ASAP, express please.",
)
EN_NOT_EXPRESS = ("Standard shipping is fine.", "No rush.", "Regular delivery is OK.", "No need for express.")
EN_CHATTER = (
    "Hope you're well!",
    "Love your store.",
    "It's a gift for my sister.",
    "A friend recommended you.",
    "Big fan of your stuff.",
    "Also, do you gift wrap?",
    "Your last sale was great.",
    "Sorry for the late message.",
)
EN_GREET = ("Hi", "Hello", "Hey there", "Hi team", "Good morning")
EN_INTRO = ("This is {name}.", "My name is {name}.", "{name} here.", "It's {name} writing.")
EN_SIGN = ("Thanks, {name}", "Thank you! {name}", "Best, {name}", "- {name}", "Cheers, {name}", "Regards, {name}")


def en_express(rng: random.Random, express: bool) -> str:
    """An express request, or (more often than not) silence or an explicit 'no rush' when false."""
    if express:
        return rng.choice(EN_EXPRESS)
    return rng.choice(EN_NOT_EXPRESS) if rng.random() < 0.35 else ""


def en_core(rng: random.Random, order: Order, distractor: str | None) -> list[str]:
    """The order sentences (what, where, how fast), with the chosen distractor woven in."""
    forms = rng.choice(order.product.en)
    item = en_item(rng, order, forms)
    sentences = []
    if distractor == "previous":
        prev = rng.choice([p for p in CATALOG if p is not order.product])
        prev_q = rng.choice([n for n in range(1, 6) if n != order.quantity])
        prev_forms = prev.en[0]
        prev_head = f"{rng.choice(COLORS)} {prev_forms[prev_q > 1]}"
        previous = f"{en_count(rng, prev_q, prev_head)} {prev_head}"
        sentences.append(rng.choice(EN_PREVIOUS).format(previous=previous))
        sentences.append(rng.choice(EN_WANT_AFTER_PREVIOUS).format(item=item))
    else:
        sentences.append(rng.choice(EN_WANT).format(item=item))
    want = len(sentences) - 1  # express goes after the request, never next to the previous order
    if distractor == "color":
        wrong = other(rng, COLORS, order.color)
        sentences.append(rng.choice((f"Make sure it's {order.color}, not {wrong}.", f"Not the {wrong} one, please.")))
    if distractor == "size":
        wrong = other(rng, SIZES, order.size)
        feel = "big" if SIZES.index(wrong) > SIZES.index(order.size) else "small"
        sentences.append(f"The {wrong} I got before was too {feel}.")
    if distractor == "city":
        sentences.append(rng.choice(EN_SHIP_CITY_DISTRACTOR).format(city=order.city, other=other_city(rng, order)))
    else:
        sentences.append(rng.choice(EN_SHIP).format(city=order.city))
    express = en_express(rng, order.express)
    if express:
        sentences.insert(rng.choice((want + 1, len(sentences))), express)
    return sentences


def other_city(rng: random.Random, order: Order) -> str:
    """A city of the same language that is not the destination."""
    return other(rng, CITIES_EN if order.city in CITIES_EN else CITIES_ZH, order.city)


def en_chat(rng: random.Random, order: Order, distractor: str | None) -> str:
    """A terse chat message: lowercase greeting, name in passing, short clauses."""
    body = " ".join(en_core(rng, order, distractor))
    name = order.customer
    return rng.choice(
        (
            f"hey, {name} here. {body} thx",
            f"hi! {body} - {name}",
            f"{name}: {body} thanks!",
            f"order for {name}. {body}",
            f"hello! {body} name's {name}.",
        )
    )


def en_email(rng: random.Random, order: Order, distractor: str | None) -> str:
    """A polite 2-3 sentence email with greeting and sign-off; the name is in the intro, the sign-off or both."""
    core = en_core(rng, order, distractor)
    where = rng.randrange(3)
    intro = rng.choice(EN_INTRO).format(name=order.customer) + " " if where != 1 else ""
    sign = rng.choice(EN_SIGN).format(name=order.customer) if where != 0 else rng.choice(("Thanks!", "Thank you."))
    sep = rng.choice(("\n\n", " "))
    greet = rng.choice(EN_GREET) + (rng.choice((",", "!")) if sep == "\n\n" else "!")
    return f"{greet}{sep}{intro}{' '.join(core)}{sep}{sign}"


def en_note(rng: random.Random, order: Order, distractor: str | None) -> str:
    """A chatty note: small talk around the order, name at start or end."""
    core = en_core(rng, order, distractor)
    chatter = rng.sample(EN_CHATTER, 2)
    parts = [chatter[0], *core]
    if rng.random() < 0.5:
        parts.append(chatter[1])
    if rng.random() < 0.5:
        return rng.choice(EN_INTRO).format(name=order.customer) + " " + " ".join(parts)
    return " ".join(parts) + " " + rng.choice(EN_SIGN).format(name=order.customer)


def en_form(rng: random.Random, order: Order, distractor: str | None) -> str:
    """A key: value form pasted into the chat; size/color lines omitted when not given."""
    forms = rng.choice(order.product.en)
    lines = [
        f"{rng.choice(('Item', 'Product'))}: {forms[0]}",
        f"{rng.choice(('Qty', 'Quantity'))}: {order.quantity}",
    ]
    if order.size:
        lines.append(f"Size: {order.size}")
    if order.color:
        lines.append(f"{rng.choice(('Color', 'Colour'))}: {order.color}")
    rng.shuffle(lines)
    lines.insert(0, f"{rng.choice(('Name', 'Customer'))}: {order.customer}")
    lines.append(f"{rng.choice(('City', 'Ship to'))}: {order.city}")
    shipping = rng.choice((("Shipping", "express", "standard"), ("Express", "yes", "no"), ("Urgent", "yes", "no")))
    lines.append(f"{shipping[0]}: {shipping[1] if order.express else shipping[2]}")
    lead = rng.choice(("New order below.", "Please process this order, thanks:", "Order details:"))
    return lead + "\n" + "\n".join(lines)


# ---------------------------------------------------------------- Chinese


def zh_count(rng: random.Random, quantity: int) -> str:
    """A quantity as a digit or a Chinese numeral (2 is 两 before a measure word)."""
    return str(quantity) if rng.random() < 0.4 else NUMBERS_ZH[quantity]


def zh_item(rng: random.Random, order: Order) -> str:
    """The Chinese noun phrase for what is ordered, in one of several word orders."""
    name = rng.choice(order.product.zh)
    count = zh_count(rng, order.quantity) + order.product.measure
    color = COLORS_ZH[order.color] if order.color else ""
    size = rng.choice(SIZE_FORMS_ZH[order.size]) if order.size else ""
    pattern = rng.randrange(5)
    if pattern == 0:
        return f"{count}{size}{color}{name}"
    if pattern == 1:
        head = f"{count}{color}的{name}" if color else f"{count}{name}"
        return head + (f"，{size}" if size else "")
    if pattern == 2:
        return f"{name}{count}" + "".join(f"，{e}" for e in (color, size) if e)
    if pattern == 3:
        return f"{color}{name}{size} x{order.quantity}"
    return "，".join(e for e in (name, color, size) if e) + f"，{count}"


ZH_WANT = ("想买{item}", "我要{item}", "帮我下单{item}", "订{item}", "来{item}", "麻烦给我发{item}", "需要{item}")
ZH_WANT_AFTER_PREVIOUS = ("这次要{item}", "这次想买{item}", "现在再来{item}")
ZH_SHIP = ("寄到{city}", "发{city}", "收货城市：{city}", "地址在{city}", "送到{city}", "寄{city}", "发到{city}")
ZH_SHIP_CITY_DISTRACTOR = (
    "我人在{other}出差，但要寄到{city}",
    "这次不寄{other}了，寄{city}",
    "别发到{other}，发{city}",
)
ZH_EXPRESS = ("加急", "要加急", "发顺丰", "走顺丰", "急用，请加急", "麻烦尽快发顺丰", "比较急，加急处理")
ZH_NOT_EXPRESS = ("不急", "普通快递就行", "不着急，慢慢发", "不用加急")
ZH_CHATTER = ("上次的质量很好", "朋友推荐来的", "送给同事的礼物", "你们家东西不错", "刚看到你们上新", "之前问过客服了")
ZH_GREET = ("你好，", "您好，", "在吗？", "老板好，", "hi，", "")
ZH_INTRO = ("我是{name}", "我叫{name}", "这里是{name}", "收件人{name}")


def zh_express(rng: random.Random, express: bool) -> str:
    """An express request, or usually nothing (sometimes an explicit 'not urgent') when false."""
    if express:
        return rng.choice(ZH_EXPRESS)
    return rng.choice(ZH_NOT_EXPRESS) if rng.random() < 0.35 else ""


def zh_core(rng: random.Random, order: Order, distractor: str | None) -> list[str]:
    """The order clauses (what, where, how fast), with the chosen distractor woven in."""
    item = zh_item(rng, order)
    clauses = []
    if distractor == "previous":
        prev = rng.choice([p for p in CATALOG if p is not order.product])
        prev_q = rng.choice([n for n in range(1, 6) if n != order.quantity])
        prev_color = COLORS_ZH[rng.choice(COLORS)]
        clauses.append(f"上次买了{zh_count(rng, prev_q)}{prev.measure}{prev_color}{prev.zh[0]}")
        clauses.append(rng.choice(ZH_WANT_AFTER_PREVIOUS).format(item=item))
    else:
        clauses.append(rng.choice(ZH_WANT).format(item=item))
    want = len(clauses) - 1  # express goes after the request, never next to the previous order
    if distractor == "color":
        wrong = COLORS_ZH[other(rng, COLORS, order.color)]
        clauses.append(rng.choice((f"不要{wrong}的", f"别发{wrong}")))
    if distractor == "size":
        wrong = other(rng, SIZES, order.size)
        feel = "大" if SIZES.index(wrong) > SIZES.index(order.size) else "小"
        clauses.append(f"上次买的{rng.choice(SIZE_FORMS_ZH[wrong])}太{feel}了")
    if distractor == "city":
        clauses.append(rng.choice(ZH_SHIP_CITY_DISTRACTOR).format(city=order.city, other=other_city(rng, order)))
    else:
        clauses.append(rng.choice(ZH_SHIP).format(city=order.city))
    express = zh_express(rng, order.express)
    if express:
        clauses.insert(rng.choice((want + 1, len(clauses))), express)
    return clauses


def zh_chat(rng: random.Random, order: Order, distractor: str | None) -> str:
    """A terse chat message: clauses joined by commas, the name up front or at the end."""
    body = "，".join(zh_core(rng, order, distractor))
    name = order.customer
    return rng.choice(
        (
            f"{name}，{body}",
            f"{rng.choice(ZH_GREET)}{body}。{name}",
            f"{name}下单：{body}",
            f"{body}，收件人{name}",
        )
    )


def zh_polite(rng: random.Random, order: Order, distractor: str | None) -> str:
    """A polite message: greeting, self-introduction, the order, thanks."""
    core = zh_core(rng, order, distractor)
    intro = rng.choice(ZH_INTRO).format(name=order.customer)
    thanks = rng.choice(("谢谢！", "谢谢。", "辛苦了！", "麻烦了，谢谢"))
    return f"{rng.choice(ZH_GREET)}{intro}，{'，'.join(core)}。{thanks}"


def zh_note(rng: random.Random, order: Order, distractor: str | None) -> str:
    """A chatty note: small talk first, signature at the end."""
    core = zh_core(rng, order, distractor)
    chatter = rng.choice(ZH_CHATTER)
    sign = rng.choice(("——{name}", "。{name}留言", "。下单人：{name}")).format(name=order.customer)
    return f"{chatter}。{'，'.join(core)}{sign}"


def zh_form(rng: random.Random, order: Order, distractor: str | None) -> str:
    """A key：value form; size/color lines omitted when not given."""
    count = rng.choice((str(order.quantity), zh_count(rng, order.quantity) + order.product.measure))
    lines = [f"商品：{rng.choice(order.product.zh)}", f"数量：{count}"]
    if order.size:
        lines.append(f"尺码：{rng.choice((order.size, *SIZE_FORMS_ZH[order.size]))}")
    if order.color:
        lines.append(f"颜色：{COLORS_ZH[order.color]}")
    rng.shuffle(lines)
    lines.insert(0, f"{rng.choice(('姓名', '收货人', '客户'))}：{order.customer}")
    lines.append(f"{rng.choice(('城市', '收货城市'))}：{order.city}")
    flag = "是" if order.express else "否"
    lines.append(f"{rng.choice(('是否加急', '加急'))}：{flag}")
    lead = rng.choice(("下单信息：\n", "订单如下：\n", ""))
    return lead + "\n".join(lines)


# ---------------------------------------------------------------- assembly

Renderer = Callable[[random.Random, Order, str | None], str]
STYLES: dict[str, tuple[Renderer, ...]] = {
    "en": (en_chat, en_email, en_note, en_form),
    "zh": (zh_chat, zh_polite, zh_note, zh_form),
}
STYLE_WEIGHTS = (0.3, 0.3, 0.25, 0.15)  # forms are the easiest case, so they get the smallest share


def pick_distractor(rng: random.Random, order: Order) -> str | None:
    """Sometimes add one distractor, choosing only kinds that make sense for this order."""
    if rng.random() >= DISTRACTOR_RATE:
        return None
    kinds = ["previous", "city"] + (["color"] if order.color else []) + (["size"] if order.size else [])
    return rng.choice(kinds)


def length_ok(lang: str, text: str) -> bool:
    """Keep texts short-to-medium so training is fast: words for English, characters for Chinese."""
    low, high = EN_WORDS if lang == "en" else ZH_CHARS
    size = len(text.split()) if lang == "en" else len("".join(text.split()))
    return low <= size <= high


def render(rng: random.Random, order: Order, style: Renderer) -> str:
    """One order text in the given style; forms carry no distractor (they are structured by nature)."""
    distractor = None if style in (en_form, zh_form) else pick_distractor(rng, order)
    return style(rng, order, distractor)


def make_record(record_id: str, lang: str, text: str, order: Order) -> dict:
    """A record in OpenAI messages format with a compact JSON answer."""
    answer = json.dumps(order.answer(), ensure_ascii=False)
    messages = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": text},
        {"role": "assistant", "content": answer},
    ]
    return {"id": record_id, "category": lang, "messages": messages}


def build_split(rng: random.Random, n: int, prefix: str, pick_name: NamePicker, seen: set[str]) -> list[dict]:
    """n records, half English and half Chinese in shuffled order, with no text repeated across calls (seen)."""
    langs = ["en", "zh"] * (n // 2) + ["en"] * (n % 2)
    rng.shuffle(langs)
    records = []
    for index, lang in enumerate(langs, start=1):
        style = rng.choices(STYLES[lang], weights=STYLE_WEIGHTS)[0]  # drawn once so length retries keep the mix
        for _attempt in range(1000):
            order = sample_order(rng, lang, pick_name)
            text = render(rng, order, style)
            if text not in seen and length_ok(lang, text):
                break
        else:
            raise RuntimeError(f"could not draw a fresh {lang} text for {prefix}-{index}")
        seen.add(text)
        records.append(make_record(f"{prefix}-{index:04d}", lang, text, order))
    return records


def schema() -> dict:
    """The JSON Schema of the answer object (all keys required, nothing else allowed)."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Order",
        "type": "object",
        "properties": {
            "customer": {"type": "string", "minLength": 1},
            "product": {"type": "string", "enum": [p.key for p in CATALOG]},
            "quantity": {"type": "integer", "minimum": 1, "maximum": 10},
            "size": {"type": ["string", "null"], "enum": [*SIZES, None]},
            "color": {"type": ["string", "null"], "enum": [*COLORS, None]},
            "city": {"type": "string", "minLength": 1},
            "express": {"type": "boolean"},
        },
        "required": list(KEYS),
        "additionalProperties": False,
    }


def write_jsonl(path: Path, records: list[dict]) -> None:
    """UTF-8, one compact record per line, '\\n' line endings on every platform."""
    with path.open("w", encoding="utf-8", newline="\n") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def generate(out_dir: Path, seed: int = SEED) -> dict[str, int]:
    """Write train.jsonl, test.jsonl and schema.json; the test split is drawn after train so it can avoid its texts."""
    out_dir.mkdir(parents=True, exist_ok=True)
    seen: set[str] = set()
    train = build_split(random.Random(seed), N_TRAIN, "train", train_name_picker(), seen)
    test = build_split(random.Random(seed + 1), N_TEST, "test", test_name_picker(), seen)
    write_jsonl(out_dir / "train.jsonl", train)
    write_jsonl(out_dir / "test.jsonl", test)
    with (out_dir / "schema.json").open("w", encoding="utf-8", newline="\n") as handle:
        handle.write(json.dumps(schema(), ensure_ascii=False, indent=2) + "\n")
    return {"train": len(train), "test": len(test)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    counts = generate(args.out_dir, args.seed)
    print(f"wrote {counts['train']} train and {counts['test']} test records to {args.out_dir}")


if __name__ == "__main__":
    main()
