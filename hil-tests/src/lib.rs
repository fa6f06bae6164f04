//! Hardware-in-the-loop harness. Scenarios arrive with the agent and controller issues;
//! `images/` holds the device image recipes they boot.
