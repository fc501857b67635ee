from __future__ import annotations

from django import forms

from raftweb.core.models import ModelProfile


class TokenCreateForm(forms.Form):
    name = forms.CharField(
        max_length=100, help_text="What the token is for, e.g. 'nightly export'."
    )


class ModelProfileForm(forms.ModelForm):
    api_key = forms.CharField(
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
