//! Sans-I/O membership core (see ARCHITECTURE.md, "Cluster protocol").
