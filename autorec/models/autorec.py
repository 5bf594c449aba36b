"""PLACEHOLDER: being written."""
from ..base import BaseRecommender


class IAutoRec(BaseRecommender):
    pass


class UAutoRec(BaseRecommender):
    pass
