//! shardcast engine
