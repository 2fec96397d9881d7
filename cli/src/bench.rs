//! `sandstorm bench`: whole-system figures, each printed beside the peer it is compared with.
pub use placeholder::*;
mod placeholder {
    use clap::Args;
    #[derive(Debug, Args)]
    pub struct BenchArgs {}
    pub fn run(_: &BenchArgs) -> anyhow::Result<()> {
        Ok(())
    }
}
