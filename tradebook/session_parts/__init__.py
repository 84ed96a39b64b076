"""The parts of :class:`tradebook.session.Session`, one job each (the class is assembled from them there):

- :mod:`~tradebook.session_parts.state`: session states, decisions and their codes, the strategy's view,
  algo and deferral bookkeeping;
- :mod:`~tradebook.session_parts.signals`: signals and intents checked, decided and sent;
- :mod:`~tradebook.session_parts.algos`: TWAP/VWAP slices released, watched, retried, stopped;
- :mod:`~tradebook.session_parts.recovery`: the session journal read back at a restart;
- :mod:`~tradebook.session_parts.loop`: the background loop, a step of session time, kill switch and flatten;
- :mod:`~tradebook.session_parts.live`: connecting to a broker, arming and paper fallbacks.

Import :class:`~tradebook.session.Session` (and the names it re-exports) from :mod:`tradebook.session`.
"""
