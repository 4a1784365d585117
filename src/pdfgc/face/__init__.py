"""Face geometry shared by preprocessing, the synthetic data and the metrics: the iBUG
68-point layout and its detectors (``landmarks``), and what is measured on landmarks
(``geometry``: eye boxes, the mean face, head pose, eye aspect ratio).
"""
