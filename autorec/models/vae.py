"""PLACEHOLDER: being written."""
from ..base import BaseRecommender


class MultVAE(BaseRecommender):
    pass
