"""The side-by-side benchmark behind ``benchmarks/compare.py``, one concern a module.

- :mod:`suite.settings`: the methods, labels, shared constants, the :class:`~suite.settings.Settings` of a run and
  its command line;
- :mod:`suite.methods`: how every method and the datamodule are built, and each method's training budget;
- :mod:`suite.timing`: latency, CPU time and memory measurements;
- :mod:`suite.worker`: what one worker subprocess does (train, test and time one method, or the backbone alone);
- :mod:`suite.report`: the result rows, ``results.csv`` and ``results.md``;
- :mod:`suite.chart`: ``chart.png``;
- :mod:`suite.notes`: the caveats written next to the numbers;
- :mod:`suite.runner`: the parent process (one worker per method, several roots, the outputs, ``main``).

``benchmarks/compare.py`` is the entry point and re-exports every public name, so ``import compare`` keeps working.
"""
