"""PLACEHOLDER: being written."""
from .base import BaseRecommender


class ALS(BaseRecommender):
    pass


class BPR(BaseRecommender):
    pass


class EASE(BaseRecommender):
    pass


class BiasedMF(BaseRecommender):
    pass


class Popularity(BaseRecommender):
    pass
