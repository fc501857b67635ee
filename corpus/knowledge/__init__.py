"""Knowledge bases, documents, chunks, embedding versions, document splits, ingestion, search."""
