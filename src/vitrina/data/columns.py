"""Column names of the interaction table, in one place."""

from typing import Final

USER: Final = "user_id"
ITEM: Final = "item_id"
TIMESTAMP: Final = "timestamp"
WEIGHT: Final = "weight"
REQUIRED: Final = (USER, ITEM, TIMESTAMP, WEIGHT)
