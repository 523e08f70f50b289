// Filled by the composefs writer work.
