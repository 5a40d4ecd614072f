//! Host tuning: sizing arithmetic, `doctor` and `apply`.
