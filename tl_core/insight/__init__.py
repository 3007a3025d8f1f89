"""What a model and its data tell: metrics, learning curves, attention maps, doubtful labels.

- ``metrics``: accuracy, confusion matrix, per-class precision/recall/F1, ROC (``Evaluation``).
- ``curves``: reading learning curves (where overfitting starts).
- ``explain``: Grad-CAM attention maps.
- ``label_issues``: images whose label is probably wrong, near duplicates, odd ones out.
"""
