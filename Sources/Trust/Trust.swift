// Filled by the trust work.
