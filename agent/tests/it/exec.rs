//! `edgefn-agent exec` as a user runs it.
