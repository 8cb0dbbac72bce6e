//! The sans-IO engine: a pod's history (merged observations) and the view
//! of it the rules judge (generations, runs, attached probe failures).

pub mod history;
pub mod view;
