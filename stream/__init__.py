"""Wire protocol, sockets and flow control, recorder, and file readers/writers."""

from tiltstream.stream.series import TiltSeries

__all__ = ["TiltSeries"]
