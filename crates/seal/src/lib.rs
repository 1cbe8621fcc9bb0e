//! The cluster key and sealed datagrams (see ARCHITECTURE.md, "The cluster key").
