use super::*;
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::collections::HashMap;

fn sample(mix: &Mix, draws: u32) -> HashMap<Op, u32> {
    let mut rng = StdRng::seed_from_u64(17);
    let mut counts = HashMap::new();
    for _ in 0..draws {
        *counts.entry(mix.choose(&mut rng)).or_default() += 1;
    }
    counts
}

const WRITES: [Op; 6] = [
    Op::CreateArticle,
    Op::CreateComment,
    Op::Favorite,
    Op::Unfavorite,
    Op::Follow,
    Op::Unfollow,
];

#[test]
fn mix_write_share_matches_ratio() {
    let draws = 100_000;
    for ratio in [0.1, 0.3] {
        let counts = sample(&Mix::new(ratio, true, true), draws);
        let writes: u32 = WRITES
            .iter()
            .map(|op| counts.get(op).copied().unwrap_or(0))
            .sum();
        let share = f64::from(writes) / f64::from(draws);
        assert!(
            (share - ratio).abs() < 0.005,
            "write share {share} for ratio {ratio}"
        );
    }
}

#[test]
fn mix_operation_shares_match_weights() {
    let mix = Mix::new(0.1, true, true);
    let draws = 200_000;
    let counts = sample(&mix, draws);
    // GetArticle weighs 25 of 100 read weights: 0.9 * 0.25 = 0.225.
    assert!((mix.share(Op::GetArticle) - 0.225).abs() < 1e-9);
    // CreateComment weighs 30 of 100 write weights: 0.1 * 0.3 = 0.03.
    assert!((mix.share(Op::CreateComment) - 0.03).abs() < 1e-9);
    for op in counts.keys() {
        let observed = f64::from(counts[op]) / f64::from(draws);
        let expected = mix.share(*op);
        assert!(
            (observed - expected).abs() < 0.004,
            "{op:?}: {observed} vs {expected}"
        );
    }
    assert_eq!(counts.len(), 16);
}

#[test]
fn mix_skips_disabled_operations() {
    let counts = sample(&Mix::new(0.5, false, false), 20_000);
    for op in [
        Op::FixedFeed,
        Op::GetArticle,
        Op::GetComments,
        Op::CreateComment,
        Op::Favorite,
    ] {
        assert!(!counts.contains_key(&op), "{op:?} was chosen");
    }
    assert!(counts.contains_key(&Op::CreateArticle));
    assert!(counts.contains_key(&Op::Feed));
}

#[test]
fn mix_without_writes_only_reads() {
    let counts = sample(&Mix::new(0.0, true, true), 10_000);
    assert!(WRITES.iter().all(|op| !counts.contains_key(op)));
}
