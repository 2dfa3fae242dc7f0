"""Predictors: weights + preprocessing + model -> results; device choice; tiling, batching."""
