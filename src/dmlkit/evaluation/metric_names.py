"""Display names of the metrics in tables and reports (keys as in docs/metrics.md)."""

COLUMNS = [("precision_at_1", "P@1"), ("recall_at_2", "R@2"), ("recall_at_4", "R@4"),
           ("recall_at_8", "R@8"), ("r_precision", "R-Prec"), ("map_at_r", "MAP@R"),
           ("nmi", "NMI"), ("ami", "AMI")]
