"""From sentences to the SNL-RPN's language kernels: one [B, channels] kernel per level."""

from torch import nn

from snlt_fast.language.encoders import build_encoder, check_sentences


class LanguageKernels(nn.Module):
    """A sentence encoder and the map from its embedding to `levels` kernels of `channels` each.

    projection=None picks the published SNLT mapping when the embedding has exactly
    levels x channels components (BERT's 768 = 3 x 256: level n takes components
    [n*256, (n+1)*256)), else a learned linear projection; True forces the projection,
    False forbids it.
    """

    def __init__(self, encoder="minilm", levels=3, channels=256, projection=None):
        super().__init__()
        self.encoder = build_encoder(encoder)
        self.levels, self.channels = levels, channels
        width = levels * channels
        if projection is None:
            projection = self.encoder.dim != width
        if not projection and self.encoder.dim != width:
            raise ValueError(
                f"projection=False slices the embedding into {levels} kernels of {channels}, which needs a "
                f"{width}-d encoder; this one is {self.encoder.dim}-d"
            )
        self.projection = nn.Linear(self.encoder.dim, width) if projection else None

    def config(self):
        return {"encoder": self.encoder.config(), "projection": self.projection is not None}

    def forward(self, sentences):
        sentences = check_sentences(sentences, "sentences")
        embeddings = self.encoder.encode(sentences)
        if self.projection is not None:
            embeddings = self.projection(embeddings.to(self.projection.weight))
        kernels = embeddings.reshape(len(sentences), self.levels, self.channels).unbind(dim=1)
        return [kernel.contiguous() for kernel in kernels]
