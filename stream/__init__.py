"""Wire protocol, sockets and flow control, recorder, and file readers/writers."""

from tiltstream.stream.errors import FileFormatError
from tiltstream.stream.export import export_volume
from tiltstream.stream.nxtomo import NXtomoWriter, write_series
from tiltstream.stream.readers import describe, read_series
from tiltstream.stream.recorder import Recorder, RecorderStats
from tiltstream.stream.results import read_result, write_result
from tiltstream.stream.series import TiltSeries
from tiltstream.stream.sockets import CurveClientConfig, CurveConfig, tcp_endpoint
from tiltstream.stream.transport import (
    FanOutSender,
    FrameReceiver,
    FrameSender,
    Publisher,
    ReceiverStats,
    Subscriber,
)

__all__ = [
    "TiltSeries",
    "FileFormatError",
    "NXtomoWriter",
    "write_series",
    "read_series",
    "describe",
    "write_result",
    "read_result",
    "export_volume",
    "FrameSender",
    "FanOutSender",
    "FrameReceiver",
    "Publisher",
    "Subscriber",
    "ReceiverStats",
    "CurveConfig",
    "CurveClientConfig",
    "tcp_endpoint",
    "Recorder",
    "RecorderStats",
]
