"""The dataset: Q&A pairs, review, agreement, import/export, and the rows training reads."""
