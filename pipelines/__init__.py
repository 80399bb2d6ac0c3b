"""Fruits! medallion pipeline: bronze (raw images), silver (MobileNetV2 features), gold (PCA)."""
