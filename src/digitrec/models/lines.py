"""Line readers' networks: a CNN or a CNN + BiLSTM over a 32-pixel-high line, 11-class CTC frames per 4 columns."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from digitrec.models.layers import conv_bn
from digitrec.models.spec import register_model

__all__ = ["LineCNNConfig", "LineCNN", "LineCRNNConfig", "LineCRNN"]


@dataclass(frozen=True)
class LineCNNConfig:
    """A fully convolutional line reader: per-frame digit logits for CTC decoding."""

    in_channels: int = 1  # input image channels (grey)
    width: int = 16  # filters in the first layer; later stages have 2x, 4x and 8x
    dropout: float = 0.2  # dropout probability before the column features and the classifier
    num_classes: int = 11  # frame classes: the CTC blank (index 0), then the digits 0-9


@register_model("line-ctc", LineCNNConfig,
                "Line reader: a CNN over a 32-pixel-high line, one 11-class frame per 4 columns (CTC)",
                task="lines")
class LineCNN(nn.Module):
    """Reads a whole line of digits without cutting it: CTC frame logits from a CNN.

    Convolutions and pooling shrink the 32-pixel height to one row and the width by
    ``LINE_STRIDE``; a 1-D convolution over the frames (about two digits wide in all) gives
    each frame context from its neighbours, so touching and overlapping digits are read
    where they are, with no segmentation.
    """

    def __init__(self, config: LineCNNConfig) -> None:
        super().__init__()
        if config.width < 1 or not 0.0 <= config.dropout < 1.0 or config.num_classes < 2:
            raise ValueError("width must be >= 1, dropout in [0, 1) and num_classes >= 2")
        self.config = config
        w = config.width
        self.features = nn.Sequential(
            *conv_bn(config.in_channels, w, 3, padding=1), nn.MaxPool2d(2),  # (B, w, 16, W/2)
            *conv_bn(w, 2 * w, 3, padding=1),
            *conv_bn(2 * w, 2 * w, 3, padding=1), nn.MaxPool2d(2),  # (B, 2w, 8, W/4)
            *conv_bn(2 * w, 4 * w, 3, padding=1),
            *conv_bn(4 * w, 4 * w, 3, padding=1), nn.MaxPool2d((2, 1)),  # (B, 4w, 4, W/4)
            nn.Dropout(config.dropout),
            *conv_bn(4 * w, 8 * w, (4, 1)),  # (B, 8w, 1, W/4): one feature column per frame
        )
        self.frames = nn.Sequential(
            nn.Conv1d(8 * w, 8 * w, 5, padding=2, bias=False), nn.BatchNorm1d(8 * w), nn.ReLU(inplace=True),
            nn.Dropout(config.dropout),
            nn.Conv1d(8 * w, config.num_classes, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, 32, W) standardised lines, W a multiple of 4 -> (B, 11, W/4) frame logits."""
        return self.frames(self.features(x).flatten(2))  # (B, 8w, W/4) -> (B, 11, W/4)


@dataclass(frozen=True)
class LineCRNNConfig:
    """A CRNN line reader: convolutions for the strokes, a bidirectional LSTM for the order of digits."""

    in_channels: int = 1  # input image channels (grey)
    width: int = 24  # filters in the first layer; later stages have 2x, 3x and 4x
    hidden: int = 96  # LSTM units per direction
    dropout: float = 0.15  # dropout probability before the LSTM and before the classifier
    num_classes: int = 11  # frame classes: the CTC blank (index 0), then the digits 0-9


@register_model("line-crnn", LineCRNNConfig,
                "Grey line reader: CNN + BiLSTM over a 32-pixel-high line, one 11-class frame per 4 columns (CTC)",
                task="lines")
class LineCRNN(nn.Module):
    """Reads a whole line of digits from the grey picture (Shi et al., 2015, CRNN, made small).

    The convolutions shrink the height to one row and the width by ``LINE_STRIDE``; the LSTM
    runs over the frames in both directions, so each frame knows the strokes around it (a
    separator dot beside a digit, the joint of two touching digits) before it is classified.
    """

    def __init__(self, config: LineCRNNConfig) -> None:
        super().__init__()
        if config.width < 1 or config.hidden < 1 or not 0.0 <= config.dropout < 1.0 or config.num_classes < 2:
            raise ValueError("width and hidden must be >= 1, dropout in [0, 1) and num_classes >= 2")
        self.config = config
        w = config.width
        self.features = nn.Sequential(
            *conv_bn(config.in_channels, w, 3, padding=1), nn.MaxPool2d(2),  # (B, w, 16, W/2)
            *conv_bn(w, 2 * w, 3, padding=1), nn.MaxPool2d(2),  # (B, 2w, 8, W/4)
            *conv_bn(2 * w, 3 * w, 3, padding=1),
            *conv_bn(3 * w, 3 * w, 3, padding=1), nn.MaxPool2d((2, 1)),  # (B, 3w, 4, W/4)
            *conv_bn(3 * w, 4 * w, 3, padding=1), nn.MaxPool2d((2, 1)),  # (B, 4w, 2, W/4)
            *conv_bn(4 * w, 4 * w, (2, 1)),  # (B, 4w, 1, W/4): one feature column per frame
            nn.Dropout(config.dropout),
        )
        self.rnn = nn.LSTM(4 * w, config.hidden, batch_first=True, bidirectional=True)
        self.classifier = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(2 * config.hidden, config.num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, 32, W) standardised lines, W a multiple of 4 -> (B, 11, W/4) frame logits."""
        frames = self.features(x).flatten(2).transpose(1, 2)  # (B, W/4, 4w)
        context, _ = self.rnn(frames.float())  # (B, W/4, 2 * hidden); the LSTM runs in fp32
        return self.classifier(context).transpose(1, 2)  # (B, 11, W/4)
