from __future__ import annotations

from django import forms

from raftweb.core.models import ModelProfile
from raftweb.core.typedforms import field_label


class TokenCreateForm(forms.Form):
    name = forms.CharField(
        max_length=100, help_text="What the token is for, e.g. 'nightly export'."
    )
    read_only = forms.BooleanField(
        required=False,
        help_text="May only read (GET requests): it cannot change or launch anything.",
    )


class ModelProfileForm(forms.ModelForm):
    api_key = forms.CharField(
        label=field_label("api_key"),
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="Leave empty to keep the stored key.",
    )
    clear_api_key = forms.BooleanField(required=False, label="Remove the stored API key")

    class Meta:
        model = ModelProfile
        fields = [
            "backend",
            "model",
            "base_url",
            "api_key",
            "adapter_path",
            "max_concurrency",
            "timeout_s",
            "price_in_per_1k",
            "price_out_per_1k",
        ]
        labels = {
            "base_url": field_label("base_url"),
            "adapter_path": "Adapter path",
            "timeout_s": field_label("timeout_s"),
            "price_in_per_1k": "Price in (USD per 1,000 tokens)",
            "price_out_per_1k": "Price out (USD per 1,000 tokens)",
        }
        help_texts = {
            "model": "Hub id (fetched on first use where a hub is reachable) or a local folder path.",
            "base_url": "For the 'openai' backend: e.g. http://127.0.0.1:8001/v1 (vLLM).",
            "adapter_path": "Optional LoRA adapter folder (peft) for the 'hf' backend.",
            "price_in_per_1k": "USD per 1,000 input tokens, for cost estimates.",
            "price_out_per_1k": "USD per 1,000 output tokens.",
        }

    def __init__(self, *args: object, backends: list[str], **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.fields["backend"] = forms.ChoiceField(choices=[(b, b) for b in backends])
