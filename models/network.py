"""The network: one MiniLM (BERT) encoder, mean pooling, and two linear heads (topic, sentiment)."""

from __future__ import annotations

import torch
from torch import nn
from transformers import BertConfig, BertModel


class TwoHeadClassifier(nn.Module):
    """One forward pass gives topic logits and sentiment logits for a batch of token ids."""

    def __init__(self, config: BertConfig, n_topics: int, n_sentiments: int, dropout: float = 0.1):
        super().__init__()
        self.encoder = BertModel(config, add_pooling_layer=False)
        self.dropout = nn.Dropout(dropout)
        self.topic_head = nn.Linear(config.hidden_size, n_topics)
        self.sentiment_head = nn.Linear(config.hidden_size, n_sentiments)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        pooled = self.dropout(pooled)
        return self.topic_head(pooled), self.sentiment_head(pooled)
