"""Display names of the metrics in tables and reports (keys as in docs/metrics.md)."""

COLUMNS = [("precision_at_1", "P@1"), ("recall_at_2", "R@2"), ("recall_at_4", "R@4"),
           ("recall_at_8", "R@8"), ("r_precision", "R-Prec"), ("map_at_r", "MAP@R"),
           ("nmi", "NMI"), ("ami", "AMI")]
# headers of optional metrics (Guided DML's 1-NN classification), shown when present
OPTIONAL_HEADERS = {"nn_accuracy": "1NN-Acc", "nn_macro_precision": "1NN-P",
                    "nn_macro_recall": "1NN-R", "nn_macro_f1": "1NN-F1"}
