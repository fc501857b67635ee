from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib.auth.models import Group


class KnowledgeBaseForm(forms.Form):
    name = forms.CharField(max_length=200)
    slug = forms.SlugField(
        max_length=80, required=False, help_text="Leave empty to derive it from the name."
    )
    description = forms.CharField(widget=forms.Textarea, required=False)
    chunk_size = forms.IntegerField(
        min_value=16,
        max_value=4096,
        initial=300,
        help_text="Tokens per chunk, counted with the embedding model's tokenizer; capped at what "
        "that model reads (254 for the default all-MiniLM-L6-v2), so no chunk is cut short in the "
        "dense index.",
    )
    chunk_overlap = forms.IntegerField(min_value=0, max_value=2048, initial=30)
    embedding_model = forms.CharField(
        max_length=500,
        required=False,
        help_text="sentence-transformers model id or local path; empty = the 'embedding' model profile. "
        "Fixed once created (tuned versions are added beside it).",
    )
    allowed_groups = forms.ModelMultipleChoiceField(
        queryset=Group.objects.order_by("name"),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="Empty: every role may search and chat with it. Otherwise only these groups (and admins).",
    )

    def __init__(self, *args: object, editing: bool = False, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        if editing:
            del self.fields["slug"]
            del self.fields["embedding_model"]


class SearchForm(forms.Form):
    # Bounded by RAFTWEB_MAX_QUERY_CHARS like the search API (clean_q), with the same message.
    q = forms.CharField(required=False)
    mode = forms.ChoiceField(
        choices=[("hybrid", "Hybrid"), ("dense", "Dense"), ("bm25", "BM25")],
        initial="hybrid",
        required=False,
    )
    k = forms.IntegerField(min_value=1, max_value=50, initial=5, required=False)

    def clean_q(self) -> str:
        query = self.cleaned_data.get("q") or ""
        limit = settings.MAX_QUERY_CHARS
        if len(query) > limit:
            # Search time grows with the query; a huge one would stall search for everyone.
            raise forms.ValidationError(
                f"The query is {len(query):,} characters long; the limit is {limit:,}. "
                "Shorten it to the words that matter."
            )
        return query
