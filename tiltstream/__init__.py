"""tiltstream: live reconstruction for in-situ electron tomography.

The components live in sub-packages: ``tiltstream.sim`` (phantoms and the microscope model),
``tiltstream.recon`` (geometry, projectors, SIRT, DIP), ``tiltstream.stream`` (wire protocol and
files), ``tiltstream.acquire`` (frame sources) and ``tiltstream.viz`` (monitor).
"""

__version__ = "0.1.0"
