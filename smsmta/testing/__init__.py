"""The test and benchmark kit: what tests, bench/ scripts and `smsmta demo` share.

A tool beside the CLI, not part of the services' runtime: nothing in the kernel or the
services imports it. Modules:
- `stack`: a PostgreSQL server (a URL, else an embedded one), scratch databases, free ports,
  the services and the simulator as real `python -m smsmta.cli <service>` processes;
- `settings`: the mid and marketing settings documents of a stack on one machine;
- `conditions`: the lines a benchmark prints about the machine and the database it ran on;
  `figures`: small pure helpers for benchmark figures;
- `harness`: the MTA and SMS process harnesses the tests build on (needs pytest);
- `fault_stack`, `faults`, `proxy`: the fault-injection stack, the faults, the TCP proxy;
- `smpp_fuzzer`: malformed SMPP traffic against an ESME or an SMSC, and its tally;
- `independent`, `scenarios`: the SMSC we did not write (tests/independent/smsc.js) and the
  promise scenarios run against it.
"""
