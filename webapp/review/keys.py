"""Review keys: which key chooses which class and which key does each action, per user.

A user's keys are one :class:`~webapp.review.models.ReviewKeys` row, or the defaults when they never
changed them. Class keys go by position in the label set (the first class, the second, ...), so one
set of keys serves every label set: by default the number row (1 ... 9, 0), then letters in keyboard
order, leaving out the letters that an action uses. The review page and the gallery both read them
(:func:`keys_for`), and their help lists them.

A key is what the browser reports as ``KeyboardEvent.key``: one visible ASCII character (letters
are kept lower-case and match either case) or ``Enter``. Arrows, Tab, Escape and the space bar are not
offered: the pages use them to move around.

``character_keys`` off turns every single-character key off (WCAG 2.1.4: speech input types letters that
would otherwise decide nuclei); Enter and the pages' buttons go on working.
"""

from __future__ import annotations

ACTIONS: dict[str, tuple[str, str]] = {  # action: (default key, what it does)
    "accept": ("Enter", "accept the predicted class (in the gallery: agree with the chosen card)"),
    "skip": ("s", "skip this nucleus (review page)"),
    "undo": ("u", "undo your last decision (review page)"),
    "help": ("?", "show or hide this help"),
    "zoom": ("z", "zoom out to the neighbourhood and back (review page)"),
}
NUMBER_ROW = "1234567890"
LETTER_ORDER = "qwertyuiopasdfghjklzxcvbnm"
NAMED_KEYS = ("Enter",)
MAX_CLASS_KEYS = 36


class InvalidKeys(ValueError):
    """Keys that cannot be used; ``errors`` maps a field (``classes``, ``actions.skip``) to why."""

    def __init__(self, errors: dict[str, str]):
        self.errors = errors
        super().__init__("; ".join(f"{field}: {message}" for field, message in errors.items()))


def default_actions() -> dict[str, str]:
    return {action: key for action, (key, _) in ACTIONS.items()}


def default_class_keys(actions: dict[str, str] | None = None) -> list[str]:
    """The number row, then letters in keyboard order without those the actions use."""
    taken = set((actions or default_actions()).values())
    return [key for key in NUMBER_ROW + LETTER_ORDER if key not in taken][:MAX_CLASS_KEYS]


def defaults() -> dict:
    actions = default_actions()
    return {"classes": default_class_keys(actions), "actions": actions, "character_keys": True}


def normalise_key(value) -> str:
    """One key as stored, or ValueError with the reason."""
    if not isinstance(value, str):
        raise ValueError(f"a key is a text, got {value!r}")
    text = value if value.strip() == "" else value.strip()
    for name in NAMED_KEYS:
        if text.lower() == name.lower():
            return name
    if len(text) != 1 or not ("!" <= text <= "~"):
        raise ValueError(f"{value!r} is not a key that can be used: give one visible character "
                         f"(a digit, a letter or a sign such as ; or ,) or Enter")
    return text.lower()


def validate(data, *, stored: bool = False) -> dict:
    """Check and normalise ``{"classes": [...], "actions": {...}}``. A part left out takes its default
    (class keys by default avoid the actions' keys). With ``stored`` (keys saved earlier), an action
    added since then gives up its default key to the user's own choice. Raises :class:`InvalidKeys`."""
    if not isinstance(data, dict):
        raise InvalidKeys({"keys": 'send an object: {"classes": ["1", "2", ...], "actions": {"accept": "Enter", ...}}'})
    errors: dict[str, str] = {}
    unknown = sorted(set(data) - {"classes", "actions", "character_keys"})
    if unknown:
        errors[unknown[0]] = "unknown field: only classes, actions and character_keys"
    character_keys = data.get("character_keys", True)
    if not isinstance(character_keys, bool):
        errors["character_keys"] = "true (single-character keys work) or false (only Enter and the buttons)"
    actions = default_actions()
    raw_actions = data.get("actions")
    if raw_actions is not None:
        if not isinstance(raw_actions, dict):
            errors["actions"] = f"an object of action: key, for the actions {', '.join(ACTIONS)}"
            raw_actions = {}
        for action, value in raw_actions.items():
            if action not in ACTIONS:
                errors[f"actions.{action}"] = f"unknown action: the actions are {', '.join(ACTIONS)}"
                continue
            try:
                actions[action] = normalise_key(value)
            except ValueError as exc:
                errors[f"actions.{action}"] = str(exc)
    given_actions = set(raw_actions or {}) if isinstance(raw_actions, dict) else set()
    raw_classes = data.get("classes")
    if raw_classes is None and not stored:
        # Class keys left out are the defaults. An action given one of them would shift every class key after
        # it (skip on "1" made the first class "2"): say so instead of moving the user's classes silently.
        standard = default_class_keys()
        for action in sorted(given_actions & set(ACTIONS)):
            if actions[action] in standard:
                position = standard.index(actions[action]) + 1
                errors.setdefault(f"actions.{action}", f"{actions[action]!r} is the key of class {position}: "
                                                      f"choose another key, or send classes too")
    if raw_classes is None:
        classes = default_class_keys(actions)
    elif not isinstance(raw_classes, list) or not raw_classes:
        errors["classes"] = "a list of keys, one per class in label-set order (the first class's key first)"
        classes = []
    elif len(raw_classes) > MAX_CLASS_KEYS:
        errors["classes"] = f"at most {MAX_CLASS_KEYS} class keys, got {len(raw_classes)}"
        classes = []
    else:
        classes = []
        for position, value in enumerate(raw_classes, start=1):
            try:
                classes.append(normalise_key(value))
            except ValueError as exc:
                errors.setdefault("classes", f"class {position}: {exc}")
    if not errors and stored:
        _move_defaults_out_of_the_way(actions, given_actions, classes)
    if not errors:
        owner: dict[str, str] = {}
        for action, key in actions.items():
            if key in owner:
                errors[f"actions.{action}"] = f"{key!r} is already the key of {owner[key]}: each key does one thing"
            owner.setdefault(key, action)
        for position, key in enumerate(classes, start=1):
            if key in owner:
                errors.setdefault("classes", f"class {position}: {key!r} is already the key of {owner[key]}: "
                                             f"each key does one thing")
            owner.setdefault(key, f"class {position}")
    if errors:
        raise InvalidKeys(errors)
    return {"classes": classes, "actions": actions, "character_keys": character_keys}


def patched(current: dict, changes) -> dict:
    """``current`` keys with ``changes`` applied (PATCH): the parts it gives, each action it names; anything
    else it holds is left for :func:`validate` to refuse."""
    if not isinstance(changes, dict):
        return changes
    merged = {**current, **{k: v for k, v in changes.items() if k != "actions"}}
    if "actions" in changes:
        actions = changes["actions"]
        merged["actions"] = {**current["actions"], **actions} if isinstance(actions, dict) else actions
    return merged


def _move_defaults_out_of_the_way(actions: dict[str, str], given: set[str], classes: list[str]) -> None:
    """An action the user did not set (one added after they saved their keys, such as zoom) whose default
    key they gave to something else takes the first free key instead of making their keys invalid."""
    for action in actions:
        if action in given:
            continue
        taken = set(classes) | {key for other, key in actions.items() if other != action}
        if actions[action] in taken:
            actions[action] = next(key for key in LETTER_ORDER + NUMBER_ROW + ",.;/[]-=" if key not in taken)


def keys_for(user) -> dict:
    """The user's keys (the defaults when they have not changed them)."""
    from .models import ReviewKeys

    row = ReviewKeys.objects.filter(user_id=user.pk).first() if getattr(user, "pk", None) else None
    if row is None:
        return defaults()
    try:
        return validate(row.keys, stored=True)
    except InvalidKeys:  # written by an older rule: fall back rather than break the review page
        return defaults()


def aria_shortcut(key: str | None) -> str | None:
    """A key as aria-keyshortcuts writes it (WAI-ARIA: "+" joins keys, so the plus key is "Plus")."""
    if key is None:
        return None
    return "Plus" if key == "+" else key


def described(keys: dict, classes: list[dict] | None = None) -> dict:
    """What the pages and the help show: each action with its key and meaning, and the key of each
    class of a label set (``None`` when the label set has more classes than keys, or for a character key
    the user turned off)."""
    def shown(key):  # what works: with single-character keys off, only Enter
        return key if keys["character_keys"] or key in NAMED_KEYS else None

    return {
        "classes": keys["classes"],
        "actions": keys["actions"],
        "character_keys": keys["character_keys"],
        "shown": {action: shown(key) for action, key in keys["actions"].items()},
        # For aria-keyshortcuts on the buttons: a screen reader says the key (it was in a tooltip only).
        "shortcuts": {action: aria_shortcut(shown(key)) for action, key in keys["actions"].items()},
        "action_rows": [{"action": action, "key": shown(keys["actions"][action]), "about": about}
                        for action, (_, about) in ACTIONS.items()],
        "class_rows": [{**cls, "key": key, "shortcut": aria_shortcut(key)}
                       for cls, key in ((cls, shown(keys["classes"][position]) if position < len(keys["classes"]) else None)
                                        for position, cls in enumerate(classes or []))],
    }
