"""The text pipeline: message bytes -> model input -> score.

Everything here is imported by the training code (export/): a change to text, features or
vocab changes what the model sees, so it forces a retrain (text.PIPELINE_VERSION).
"""
