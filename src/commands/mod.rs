//! The subcommands: `run`, `demo`, `check`, `token`, `health`.
