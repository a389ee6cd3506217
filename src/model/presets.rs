//! Built-in model presets: context window, output limit and prices.
//!
//! Prices are US dollars per million tokens, as published by the providers when this table was
//! written; an endpoint's JSON may override any of them.

/// Prices per million tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Prices {
    /// Uncached input.
    pub input_per_mtok: f64,
    /// Output (reasoning included).
    pub output_per_mtok: f64,
    /// Input served from the prompt cache.
    pub cached_input_per_mtok: f64,
    /// Input written to the prompt cache (Anthropic).
    pub cache_write_per_mtok: f64,
}

/// A model's limits and prices.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Preset {
    /// The model name the preset matches (also matched as a prefix of dated names).
    pub model: &'static str,
    /// Context window in tokens.
    pub context_window: u32,
    /// Maximum output tokens.
    pub max_output_tokens: u32,
    /// Prices.
    pub prices: Prices,
}

const fn p(model: &'static str, ctx: u32, out: u32, i: f64, o: f64, c: f64, w: f64) -> Preset {
    Preset {
        model,
        context_window: ctx,
        max_output_tokens: out,
        prices: Prices {
            input_per_mtok: i,
            output_per_mtok: o,
            cached_input_per_mtok: c,
            cache_write_per_mtok: w,
        },
    }
}

/// Every built-in preset. Longer names come before their prefixes.
pub const PRESETS: &[Preset] = &[
    p("gpt-4o-mini", 128_000, 16_384, 0.15, 0.60, 0.075, 0.0),
    p("gpt-4o", 128_000, 16_384, 2.50, 10.00, 1.25, 0.0),
    p("gpt-4.1-nano", 1_047_576, 32_768, 0.10, 0.40, 0.025, 0.0),
    p("gpt-4.1-mini", 1_047_576, 32_768, 0.40, 1.60, 0.10, 0.0),
    p("gpt-4.1", 1_047_576, 32_768, 2.00, 8.00, 0.50, 0.0),
    p("o4-mini", 200_000, 100_000, 1.10, 4.40, 0.275, 0.0),
    p("o3-mini", 200_000, 100_000, 1.10, 4.40, 0.55, 0.0),
    p("o3", 200_000, 100_000, 2.00, 8.00, 0.50, 0.0),
    p("claude-opus-4", 200_000, 32_000, 15.00, 75.00, 1.50, 18.75),
    p("claude-sonnet-4", 200_000, 64_000, 3.00, 15.00, 0.30, 3.75),
    p(
        "claude-3-7-sonnet",
        200_000,
        64_000,
        3.00,
        15.00,
        0.30,
        3.75,
    ),
    p("claude-3-5-sonnet", 200_000, 8_192, 3.00, 15.00, 0.30, 3.75),
    p("claude-3-5-haiku", 200_000, 8_192, 0.80, 4.00, 0.08, 1.00),
    p(
        "qwen2.5-coder-0.5b-instruct",
        4_096,
        2_048,
        0.0,
        0.0,
        0.0,
        0.0,
    ),
    p(
        "qwen2.5-coder-1.5b-instruct",
        4_096,
        2_048,
        0.0,
        0.0,
        0.0,
        0.0,
    ),
];

/// The preset for a model name: an exact match, else the longest preset name that prefixes it
/// (so `gpt-4o-2024-08-06` finds `gpt-4o`).
pub fn find(model: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.model == model).or_else(|| {
        PRESETS
            .iter()
            .filter(|p| model.starts_with(p.model))
            .max_by_key(|p| p.model.len())
    })
}

impl Prices {
    /// The cost of a call's usage.
    pub fn cost(&self, u: &super::types::Usage) -> f64 {
        let uncached = u
            .prompt_tokens
            .saturating_sub(u.cached_tokens)
            .saturating_sub(u.cache_creation_tokens);
        (uncached as f64 * self.input_per_mtok
            + u.cached_tokens as f64 * self.cached_input_per_mtok
            + u.cache_creation_tokens as f64 * self.cache_write_per_mtok
            + u.completion_tokens as f64 * self.output_per_mtok)
            / 1_000_000.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::types::Usage;

    #[test]
    fn lookup_by_exact_and_prefix() {
        assert_eq!(find("gpt-4o").unwrap().model, "gpt-4o");
        assert_eq!(find("gpt-4o-mini-2024-07-18").unwrap().model, "gpt-4o-mini");
        assert_eq!(
            find("claude-sonnet-4-20250514").unwrap().model,
            "claude-sonnet-4"
        );
        assert!(find("llama-3").is_none());
    }

    #[test]
    fn cost_counts_cache_separately() {
        let prices = find("gpt-4o").unwrap().prices;
        let u = Usage {
            prompt_tokens: 1_000_000,
            cached_tokens: 500_000,
            completion_tokens: 100_000,
            ..Usage::default()
        };
        // 0.5M uncached * 2.5 + 0.5M cached * 1.25 + 0.1M out * 10 = 1.25 + 0.625 + 1.0
        assert!((prices.cost(&u) - 2.875).abs() < 1e-9);
    }
}
