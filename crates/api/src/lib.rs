//! The node map and local API types (see ARCHITECTURE.md, "Files" and "Local API").
