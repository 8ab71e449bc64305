"""Purposes of secondary use the EHDS allows (Art. 53(1)) and the uses it prohibits (Art. 54).

Regulation (EU) 2025/327 (European Health Data Space). An application names
exactly one allowed purpose by its code; the node accepts a permit only for
purposes its own policy lists (default: all six). Prohibited uses are never a
purpose: an application naming one, or not declaring that none applies, is
refused by the hub, and a node refuses any permit whose purpose is not one of
the six.
"""

from __future__ import annotations

from enum import StrEnum

from healthfed.errors import InvalidArgument

__all__ = ["PROHIBITED_USES", "Purpose", "parse_purpose", "prohibited_use"]


class Purpose(StrEnum):
    """The six purposes of EHDS Art. 53(1), by code."""

    public_health = "public_health"
    policy_regulation = "policy_regulation"
    official_statistics = "official_statistics"
    education = "education"
    scientific_research = "scientific_research"
    improving_care = "improving_care"

    @property
    def article(self) -> str:
        return _ARTICLES[self]

    @property
    def description(self) -> str:
        return _DESCRIPTIONS[self]


_ARTICLES = {
    Purpose.public_health: "Art. 53(1)(a)",
    Purpose.policy_regulation: "Art. 53(1)(b)",
    Purpose.official_statistics: "Art. 53(1)(c)",
    Purpose.education: "Art. 53(1)(d)",
    Purpose.scientific_research: "Art. 53(1)(e)",
    Purpose.improving_care: "Art. 53(1)(f)",
}
_DESCRIPTIONS = {
    Purpose.public_health: (
        "public interest in public or occupational health (e.g. protection against serious "
        "cross-border threats, public health surveillance, quality and safety of care, "
        "medicinal products and medical devices)"
    ),
    Purpose.policy_regulation: (
        "policy-making and regulatory activities of public sector bodies and Union institutions "
        "in the health or care sectors"
    ),
    Purpose.official_statistics: "official statistics at national, multi-national or Union level",
    Purpose.education: "education or teaching in health or care at vocational or higher level",
    Purpose.scientific_research: (
        "scientific research related to health or care, including development and innovation "
        "of products or services and training, testing and evaluating algorithms and AI systems"
    ),
    Purpose.improving_care: (
        "improving the delivery of care, optimising treatment and the provision of health care "
        "based on the health data of other persons"
    ),
}

#: Art. 54 prohibited secondary uses: code -> (article, description).
PROHIBITED_USES: dict[str, tuple[str, str]] = {
    "detrimental_decisions": (
        "Art. 54(a)",
        "taking decisions detrimental to a person or group based on their health data",
    ),
    "insurance_credit_employment": (
        "Art. 54(b)",
        "decisions on job offers, less favourable terms for goods or services, excluding people "
        "from insurance or credit or changing their premiums or credit conditions, or other "
        "discrimination based on health data",
    ),
    "advertising_marketing": ("Art. 54(c)", "advertising or marketing activities"),
    "harmful_products": (
        "Art. 54(d)",
        "developing products or services that may harm individuals, public health or society "
        "(e.g. illicit drugs, alcohol, tobacco and nicotine, weapons, addictive designs)",
    ),
    "unethical_activities": (
        "Art. 54(e)",
        "activities in conflict with ethical provisions of national law",
    ),
}

# Words an applicant might type for a prohibited use instead of its code.
_PROHIBITED_ALIASES = {
    "advertising": "advertising_marketing",
    "marketing": "advertising_marketing",
    "insurance": "insurance_credit_employment",
    "credit": "insurance_credit_employment",
    "credit_scoring": "insurance_credit_employment",
    "employment": "insurance_credit_employment",
    "hiring": "insurance_credit_employment",
    "weapons": "harmful_products",
    "weaponry": "harmful_products",
    "tobacco": "harmful_products",
    "alcohol": "harmful_products",
    "gambling": "harmful_products",
    "profiling": "detrimental_decisions",
}


def _norm(text: str) -> str:
    return text.strip().lower().replace("-", "_").replace(" ", "_").replace("/", "_")


def prohibited_use(text: str) -> str | None:
    """The Art. 54 code ``text`` names (by code or a common word for it), or None."""
    key = _norm(text)
    if key in PROHIBITED_USES:
        return key
    return _PROHIBITED_ALIASES.get(key)


def parse_purpose(text: str) -> Purpose:
    """The allowed purpose ``text`` names.

    Raises
    ------
    ValueError
        ``text`` names a prohibited use (the message cites the Art. 54 point) or is
        not one of the six purpose codes (the message lists them).
    """
    code = prohibited_use(text)
    if code is not None:
        article, desc = PROHIBITED_USES[code]
        raise InvalidArgument(
            f"purpose {text!r} is a prohibited secondary use under EHDS {article}: {desc}"
        )
    try:
        return Purpose(_norm(text))
    except ValueError:
        raise InvalidArgument(
            f"purpose {text!r} is not one of the EHDS Art. 53(1) purposes: "
            f"{[p.value for p in Purpose]}"
        ) from None
