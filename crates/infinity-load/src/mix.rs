//! The operation mix of a run, and the request each operation sends.

use rand::distr::weighted::WeightedIndex;
use rand::distr::Distribution;
use rand::Rng;
use reqwest::Method;
use serde_json::Value;

/// One kind of request in the mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    Feed,
    /// The feed of the user who follows a fixed number of others.
    FixedFeed,
    GetArticle,
    GetProfile,
    ListArticles,
    ListByTag,
    ListByAuthor,
    ListByFavorited,
    GetTags,
    GetComments,
    CreateArticle,
    CreateComment,
    Favorite,
    Unfavorite,
    Follow,
    Unfollow,
}

/// Relative weights of the reads, so feeds and single articles dominate.
const READ_WEIGHTS: [(Op, u32); 10] = [
    (Op::Feed, 15),
    (Op::FixedFeed, 5),
    (Op::GetArticle, 25),
    (Op::GetProfile, 10),
    (Op::ListArticles, 8),
    (Op::ListByTag, 10),
    (Op::ListByAuthor, 8),
    (Op::ListByFavorited, 4),
    (Op::GetTags, 5),
    (Op::GetComments, 10),
];

/// Relative weights of the writes. Favourites and follows are undone as often as done.
const WRITE_WEIGHTS: [(Op, u32); 6] = [
    (Op::CreateArticle, 20),
    (Op::CreateComment, 30),
    (Op::Favorite, 15),
    (Op::Unfavorite, 15),
    (Op::Follow, 10),
    (Op::Unfollow, 10),
];

impl Op {
    /// Name of the operation in the report. `FixedFeed` is named by the caller, as
    /// `feed_<follows>`.
    pub fn name(self) -> &'static str {
        match self {
            Op::Feed => "feed",
            Op::FixedFeed => "feed_fixed",
            Op::GetArticle => "get_article",
            Op::GetProfile => "get_profile",
            Op::ListArticles => "list_articles",
            Op::ListByTag => "list_by_tag",
            Op::ListByAuthor => "list_by_author",
            Op::ListByFavorited => "list_by_favorited",
            Op::GetTags => "get_tags",
            Op::GetComments => "get_comments",
            Op::CreateArticle => "create_article",
            Op::CreateComment => "create_comment",
            Op::Favorite => "favorite",
            Op::Unfavorite => "unfavorite",
            Op::Follow => "follow",
            Op::Unfollow => "unfollow",
        }
    }

    /// Returns whether the operation needs an existing article.
    fn needs_article(self) -> bool {
        matches!(
            self,
            Op::GetArticle | Op::GetComments | Op::CreateComment | Op::Favorite | Op::Unfavorite
        )
    }
}

/// Picks operations: a write with probability `write_ratio`, else a read, each by weight.
#[derive(Debug, Clone)]
pub struct Mix {
    write_ratio: f64,
    reads: Vec<(Op, u32)>,
    writes: Vec<(Op, u32)>,
    read_index: WeightedIndex<u32>,
    write_index: WeightedIndex<u32>,
}

impl Mix {
    /// Builds the mix. Operations on articles are left out when there are none, and the fixed
    /// feed when the population has no such user.
    pub fn new(write_ratio: f64, has_articles: bool, has_fixed_feed: bool) -> Self {
        let enabled = |&(op, _): &(Op, u32)| {
            (has_articles || !op.needs_article()) && (has_fixed_feed || op != Op::FixedFeed)
        };
        let reads: Vec<_> = READ_WEIGHTS.into_iter().filter(enabled).collect();
        let writes: Vec<_> = WRITE_WEIGHTS.into_iter().filter(enabled).collect();
        let read_index = WeightedIndex::new(reads.iter().map(|(_, weight)| *weight))
            .expect("feeds, profiles and lists are always enabled");
        let write_index = WeightedIndex::new(writes.iter().map(|(_, weight)| *weight))
            .expect("article creation and follows are always enabled");
        Self {
            write_ratio,
            reads,
            writes,
            read_index,
            write_index,
        }
    }

    /// Draws the next operation.
    pub fn choose<R: Rng + ?Sized>(&self, rng: &mut R) -> Op {
        if rng.random_bool(self.write_ratio) {
            self.writes[self.write_index.sample(rng)].0
        } else {
            self.reads[self.read_index.sample(rng)].0
        }
    }

    /// Expected share of `op` among all operations.
    #[cfg(test)]
    pub fn share(&self, op: Op) -> f64 {
        let share_in = |table: &[(Op, u32)], ratio: f64| {
            let total: u32 = table.iter().map(|(_, weight)| weight).sum();
            let weight = table
                .iter()
                .find(|(candidate, _)| *candidate == op)
                .map_or(0, |e| e.1);
            ratio * f64::from(weight) / f64::from(total)
        };
        share_in(&self.reads, 1.0 - self.write_ratio) + share_in(&self.writes, self.write_ratio)
    }
}

/// One request to send: the operation it counts as, where it goes and as which user.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestSpec {
    pub operation: String,
    pub method: Method,
    pub path: String,
    pub query: Vec<(&'static str, String)>,
    /// Index of the user whose token goes with the request, if any.
    pub user: Option<usize>,
    pub body: Option<Value>,
}

#[cfg(test)]
#[path = "mix_tests.rs"]
mod tests;
