//! ARP responder stage (proxy ARP for every address). Filled in by the pipeline work.
