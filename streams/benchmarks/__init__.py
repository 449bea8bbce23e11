"""The parts of ``segmenter bench`` (the orchestration is :mod:`streams.bench`).

- :mod:`~streams.benchmarks.common`: the run's configuration, infrastructure and helpers;
- :mod:`~streams.benchmarks.load`: synthetic events and pre-producing them;
- :mod:`~streams.benchmarks.ceiling`: (a) the raw consumer that bounds what Python can do;
- :mod:`~streams.benchmarks.segmenter`: (b) one real worker draining the same events;
- :mod:`~streams.benchmarks.memory`: (d) Redis memory per customer;
- :mod:`~streams.benchmarks.live`: (c) latency, (e) API lookups and (f) timer lateness, together;
- :mod:`~streams.benchmarks.report`: the table and the JSON object.
"""
