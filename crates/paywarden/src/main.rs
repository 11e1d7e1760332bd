//! The shipped `paywarden` executable: the command line with the shipped migrations only.

paywarden::main!(paywarden_store::ExtraMigrations::default());
