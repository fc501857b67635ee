from __future__ import annotations

from django.apps import AppConfig


class ChatConfig(AppConfig):
    name = "chat"
    verbose_name = "Chat"

    def ready(self) -> None:
        from django.db.models.signals import post_delete, post_save

        from chat.services import chat_setup_forget
        from corpus.models import EmbeddingIndex, KnowledgeBase
        from raftweb.core.models import ModelProfile
        from training.models import ActiveModel, ModelVersion

        # The rows a KB's memoised chat set-up is read from (chat.services.CHAT_MODELS and
        # RETRIEVERS): a change saved in this process applies to the next question at once.
        for model in (KnowledgeBase, EmbeddingIndex, ModelProfile, ModelVersion, ActiveModel):
            for signal in (post_save, post_delete):
                signal.connect(
                    chat_setup_forget, sender=model, dispatch_uid=f"chat-setup-{model}-{signal}"
                )
