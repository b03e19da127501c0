"""The fixed prompt the rater fuses its token groups into, and the tiny size's word-level tokenizer built in code.

The prompt is a fixed list of text segments and token groups, so every window's sequence has the same length: no
padding, no placeholder-token bookkeeping, one forward pass, no generation. The `full` size renders the same
PROMPT and ANSWER_PREFIX through its base tokenizer's chat template (engines.base_model).
"""

from __future__ import annotations

from engines.features import LEVELS

PROMPT = "Please evaluate the quality of this video."
ANSWER_PREFIX = "The video quality is"
# Text segments and token groups, in order. The answer position is the last token ("is"): its LM-head
# logits over the five level words are the Stage I output, its hidden state feeds the Stage II head.
TEMPLATE: tuple[str, ...] = (
    "USER: " + PROMPT + " Frames:", "<spatial>",
    " Portrait:", "<portrait>",
    " Face:", "<face>",
    " Motion:", "<temporal>",
    " ASSISTANT: " + ANSWER_PREFIX,
)
GROUPS = ("spatial", "portrait", "face", "temporal")
SPECIAL_TOKENS = ("<pad>", "<unk>", "<s>", "</s>", "<spatial>", "<portrait>", "<face>", "<temporal>")


def build_tokenizer():
    """A word-level tokenizer over the prompt and answer texts, the level words and single digits."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    texts = [*TEMPLATE, ANSWER_PREFIX, "The score is", *LEVELS, "bad poor fair good excellent"]
    words: list[str] = []
    pre = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(), pre_tokenizers.Digits(individual_digits=True)])
    for text in texts:
        for piece, _ in pre.pre_tokenize_str(text):
            if piece not in words and piece not in SPECIAL_TOKENS:
                words.append(piece)
    for d in "0123456789.":
        if d not in words:
            words.append(d)
    vocab = {tok: i for i, tok in enumerate([*SPECIAL_TOKENS, *words])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre
    tok.decoder = decoders.WordPiece()  # joins with spaces
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    return tok


__all__ = ["ANSWER_PREFIX", "GROUPS", "PROMPT", "SPECIAL_TOKENS", "TEMPLATE", "build_tokenizer"]
