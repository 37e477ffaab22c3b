//! The node agent. So far: the pod sandbox process (`pause`). Pod workers, the
//! CRI client and the 10250 server come with the node issue.

pub mod pause;
