"""China's 34 province-level units: adcodes, Chinese and English names, name matching.

Names are matched after folding case, spaces, dashes and the Chinese suffix
(省, 市, 自治区…), so ``湖北``, ``湖北省``, ``hubei`` and ``420000`` all name Hubei.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Province:
    """A province-level unit: six-digit adcode, Chinese and English (pinyin) name."""

    adcode: str
    name_zh: str
    name_en: str

    def __str__(self) -> str:
        return f"{self.name_en} ({self.adcode} {self.name_zh})"


# adcode, Chinese name, English name, other accepted spellings.
_TABLE: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("110000", "北京市", "Beijing", ()),
    ("120000", "天津市", "Tianjin", ()),
    ("130000", "河北省", "Hebei", ()),
    ("140000", "山西省", "Shanxi", ()),
    ("150000", "内蒙古自治区", "Inner Mongolia", ("Nei Mongol", "Neimenggu")),
    ("210000", "辽宁省", "Liaoning", ()),
    ("220000", "吉林省", "Jilin", ()),
    ("230000", "黑龙江省", "Heilongjiang", ()),
    ("310000", "上海市", "Shanghai", ()),
    ("320000", "江苏省", "Jiangsu", ()),
    ("330000", "浙江省", "Zhejiang", ()),
    ("340000", "安徽省", "Anhui", ()),
    ("350000", "福建省", "Fujian", ()),
    ("360000", "江西省", "Jiangxi", ()),
    ("370000", "山东省", "Shandong", ()),
    ("410000", "河南省", "Henan", ()),
    ("420000", "湖北省", "Hubei", ()),
    ("430000", "湖南省", "Hunan", ()),
    ("440000", "广东省", "Guangdong", ()),
    ("450000", "广西壮族自治区", "Guangxi", ()),
    ("460000", "海南省", "Hainan", ()),
    ("500000", "重庆市", "Chongqing", ()),
    ("510000", "四川省", "Sichuan", ()),
    ("520000", "贵州省", "Guizhou", ()),
    ("530000", "云南省", "Yunnan", ()),
    ("540000", "西藏自治区", "Tibet", ("Xizang",)),
    ("610000", "陕西省", "Shaanxi", ()),
    ("620000", "甘肃省", "Gansu", ()),
    ("630000", "青海省", "Qinghai", ()),
    ("640000", "宁夏回族自治区", "Ningxia", ()),
    ("650000", "新疆维吾尔自治区", "Xinjiang", ()),
    ("710000", "台湾省", "Taiwan", ()),
    ("810000", "香港特别行政区", "Hong Kong", ("Xianggang",)),
    ("820000", "澳门特别行政区", "Macau", ("Macao", "Aomen")),
)
#: The 34 province-level units, by adcode.
PROVINCES: dict[str, Province] = {a: Province(a, zh, en) for a, zh, en, _ in _TABLE}

_ZH_SUFFIX = re.compile(r"(壮族自治区|回族自治区|维吾尔自治区|特别行政区|自治区|省|市)$")


def fold_name(text: str) -> str:
    """Fold a name for matching: drop case, spaces, dashes and a Chinese suffix."""
    text = re.sub(r"[\s\-_'.]", "", text.strip().casefold())
    return _ZH_SUFFIX.sub("", text) or text


def _build_names() -> dict[str, str]:
    names: dict[str, str] = {}
    for adcode, zh, en, aliases in _TABLE:
        for name in (adcode, zh, en, *aliases):
            names[fold_name(name)] = adcode
    return names


_NAMES = _build_names()


def province_by_name(name: str) -> Province | None:
    """Return the province an adcode, Chinese or English name denotes, or ``None``."""
    adcode = _NAMES.get(fold_name(name))
    return PROVINCES[adcode] if adcode else None


def suggest(token: str) -> str:
    """Return ``did you mean ...? `` naming the closest provinces, or ``""`` if none is."""
    word = fold_name(token)
    scores = {n: difflib.SequenceMatcher(None, word, n).ratio() for n in _NAMES}
    best = max(scores.values())
    # Two-character Chinese names differ by one character at 0.5; Latin ones need more.
    if best < (0.5 if any(ord(ch) > 0x2E7F for ch in word) else 0.6):
        return ""
    close = sorted((n for n, s in scores.items() if s >= best - 0.1), key=scores.__getitem__)
    provs = list(dict.fromkeys(PROVINCES[_NAMES[n]] for n in reversed(close)))[:3]
    return f"did you mean {' or '.join(map(str, provs))}? "
