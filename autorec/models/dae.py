"""PLACEHOLDER: being written."""
from ..base import BaseRecommender


class CDAE(BaseRecommender):
    pass


class MultDAE(BaseRecommender):
    pass
