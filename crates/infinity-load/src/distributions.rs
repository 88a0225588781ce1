//! Random distributions that shape the population and the traffic.

use rand::seq::SliceRandom;
use rand::Rng;
use rand_distr::{Distribution, Poisson, Zipf};

/// Zipf popularity over the ranks `0..n`, where rank 0 is the most popular.
///
/// Rank `k` is drawn with probability proportional to `1 / (k + 1)^exponent`.
#[derive(Debug, Clone, Copy)]
pub struct Popularity {
    zipf: Zipf<f64>,
    len: usize,
}

impl Popularity {
    /// Builds the distribution over `len` ranks. `len` must be at least 1 and `exponent` at
    /// least 0 (0 is uniform).
    pub fn new(len: usize, exponent: f64) -> anyhow::Result<Self> {
        let zipf = Zipf::new(len as f64, exponent)
            .map_err(|error| anyhow::anyhow!("invalid Zipf({len}, {exponent}): {error}"))?;
        Ok(Self { zipf, len })
    }

    /// Number of ranks.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Draws one rank.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> usize {
        // Zipf samples are whole numbers from 1 to len, stored as floats.
        let rank = self.zipf.sample(rng) as usize;
        rank.clamp(1, self.len) - 1
    }

    /// Draws `count` distinct ranks, never `excluded`.
    ///
    /// Rejection sampling keeps the Zipf bias. When the tail is too rare to reach `count` within
    /// a bounded number of draws, the remaining ranks are picked uniformly from those unused.
    pub fn sample_distinct<R: Rng + ?Sized>(
        &self,
        rng: &mut R,
        count: usize,
        excluded: Option<usize>,
    ) -> Vec<usize> {
        let available = self.len - usize::from(excluded.is_some_and(|rank| rank < self.len));
        let count = count.min(available);
        let mut used = vec![false; self.len];
        if let Some(rank) = excluded.filter(|&rank| rank < self.len) {
            used[rank] = true;
        }

        let mut picked = Vec::with_capacity(count);
        let mut attempts = 0;
        while picked.len() < count && attempts < count * 20 {
            attempts += 1;
            let rank = self.sample(rng);
            if !used[rank] {
                used[rank] = true;
                picked.push(rank);
            }
        }

        if picked.len() < count {
            let mut rest: Vec<usize> = (0..self.len).filter(|&rank| !used[rank]).collect();
            rest.shuffle(rng);
            picked.extend(rest.into_iter().take(count - picked.len()));
        }
        picked
    }
}

/// Draws a count with the given mean from a Poisson distribution, capped at `max`.
pub fn poisson_count<R: Rng + ?Sized>(rng: &mut R, mean: f64, max: usize) -> usize {
    if mean <= 0.0 {
        return 0;
    }
    let poisson = Poisson::new(mean).expect("mean is positive and finite");
    let count: f64 = poisson.sample(rng);
    (count as usize).min(max)
}

/// Builds a follow graph in which `result[user]` lists the users that `user` follows.
///
/// Each user follows a Poisson number of others with mean `mean_follows`, picked by Zipf
/// popularity, so a few low-rank users collect a large share of all follows. When `fixed` is
/// `Some((user, count))`, that user follows exactly `count` others.
pub fn follow_graph<R: Rng + ?Sized>(
    rng: &mut R,
    popularity: &Popularity,
    mean_follows: f64,
    fixed: Option<(usize, usize)>,
) -> Vec<Vec<usize>> {
    let users = popularity.len();
    (0..users)
        .map(|user| {
            let count = match fixed {
                Some((fixed_user, count)) if fixed_user == user => count,
                _ => poisson_count(rng, mean_follows, users - 1),
            };
            popularity.sample_distinct(rng, count, Some(user))
        })
        .collect()
}

/// Counts the followers of each user in a follow graph.
#[cfg(test)]
pub fn follower_counts(follows: &[Vec<usize>]) -> Vec<usize> {
    let mut counts = vec![0; follows.len()];
    for followee in follows.iter().flatten() {
        counts[*followee] += 1;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn zipf_picks_favour_low_ranks() {
        let mut rng = StdRng::seed_from_u64(7);
        let popularity = Popularity::new(100, 1.0).unwrap();
        let draws = 200_000;
        let mut counts = vec![0u32; 100];
        for _ in 0..draws {
            counts[popularity.sample(&mut rng)] += 1;
        }

        // P(rank 0) = 1 / H(100), where H(100) = 5.18738 is the 100th harmonic number.
        let first_share = f64::from(counts[0]) / f64::from(draws);
        assert!(
            (first_share - 1.0 / 5.18738).abs() < 0.005,
            "rank 0 share {first_share}"
        );

        // P(rank 0) / P(rank 1) = 2 and P(rank 0) / P(rank 9) = 10 for exponent 1.
        let ratio_second = f64::from(counts[0]) / f64::from(counts[1]);
        assert!(
            (ratio_second - 2.0).abs() < 0.1,
            "rank 0/1 ratio {ratio_second}"
        );
        let ratio_tenth = f64::from(counts[0]) / f64::from(counts[9]);
        assert!(
            (ratio_tenth - 10.0).abs() < 0.8,
            "rank 0/9 ratio {ratio_tenth}"
        );
    }

    #[test]
    fn zipf_exponent_zero_is_uniform() {
        let mut rng = StdRng::seed_from_u64(3);
        let popularity = Popularity::new(4, 0.0).unwrap();
        let mut counts = [0u32; 4];
        for _ in 0..40_000 {
            counts[popularity.sample(&mut rng)] += 1;
        }
        for count in counts {
            assert!((9_500..10_500).contains(&count), "count {count}");
        }
    }

    #[test]
    fn distinct_sample_has_no_repeats() {
        let mut rng = StdRng::seed_from_u64(11);
        let popularity = Popularity::new(50, 1.2).unwrap();
        let picked = popularity.sample_distinct(&mut rng, 49, Some(3));
        let mut sorted = picked.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(picked.len(), 49);
        assert_eq!(sorted.len(), 49);
        assert!(!picked.contains(&3));
    }

    #[test]
    fn distinct_sample_caps_at_available() {
        let mut rng = StdRng::seed_from_u64(1);
        let popularity = Popularity::new(5, 1.0).unwrap();
        assert_eq!(popularity.sample_distinct(&mut rng, 10, Some(0)).len(), 4);
        assert_eq!(popularity.sample_distinct(&mut rng, 10, None).len(), 5);
    }

    #[test]
    fn follower_counts_are_heavy_tailed() {
        let mut rng = StdRng::seed_from_u64(42);
        let popularity = Popularity::new(1000, 1.0).unwrap();
        let graph = follow_graph(&mut rng, &popularity, 10.0, None);
        let mut counts = follower_counts(&graph);
        let total: usize = counts.iter().sum();
        counts.sort_unstable_by(|a, b| b.cmp(a));

        // Uniform picks would give the top 1 % (10 users) about 1 % of all follows.
        let top_share = counts[..10].iter().sum::<usize>() as f64 / total as f64;
        assert!(top_share > 0.2, "top 1 % share {top_share}");
        let median = counts[500].max(1);
        assert!(counts[0] > 50 * median, "max {} median {median}", counts[0]);
        assert!((9_000..11_000).contains(&total), "total follows {total}");
    }

    #[test]
    fn fixed_user_follows_exact_count() {
        let mut rng = StdRng::seed_from_u64(5);
        let popularity = Popularity::new(1000, 1.0).unwrap();
        let graph = follow_graph(&mut rng, &popularity, 3.0, Some((999, 100)));
        assert_eq!(graph[999].len(), 100);
        assert!(!graph[999].contains(&999));
        assert!(graph
            .iter()
            .enumerate()
            .all(|(user, list)| !list.contains(&user)));
    }

    #[test]
    fn poisson_count_has_requested_mean() {
        let mut rng = StdRng::seed_from_u64(9);
        let total: usize = (0..10_000).map(|_| poisson_count(&mut rng, 4.0, 100)).sum();
        let mean = total as f64 / 10_000.0;
        assert!((mean - 4.0).abs() < 0.1, "mean {mean}");
        assert_eq!(poisson_count(&mut rng, 0.0, 10), 0);
        assert!(poisson_count(&mut rng, 50.0, 3) <= 3);
    }
}
