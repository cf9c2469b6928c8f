"""The third set of built-in training prompts: everyday chat only. After the GPU burst of
2026-12-04, chat was the one dev set still short of its target (tokens/step 1.72 against 1.8)
and its acceptance fell fastest with depth, while the training curve flattened after several
passes over the same 2,321 answers. This set adds new subjects and new ways of asking rather
than more of the same templates: practical questions, explanations, comparisons, plans,
recommendations, short messages and summaries. Same rule as the others: no six-word run shared
with the development prompt files (tests/test_train.py checks it)."""
from __future__ import annotations

import random

from .prompts_more import _take

QUESTIONS = [
    "Why does bread go stale?", "Why do onions make people cry?", "How long can cooked rice stay in the fridge?",
    "Why is the sky red at sunset?", "Why do cats purr?", "How do bees make honey?",
    "Why do we get hiccups?", "How do noise-cancelling headphones block sound?", "Why do leaves change color in autumn?",
    "Why does ice float on water?", "How do birds know where to migrate?", "Why do we yawn?",
    "How does a microwave oven heat food?", "Why does the sea taste salty?", "How are clouds formed?",
    "Why do some people need glasses?", "How does a compass find north?", "Why do our fingers wrinkle in the bath?",
    "How do plants know which way is up?", "Why is the ocean blue?", "How do chameleons change color?",
    "Why does metal feel colder than wood?", "How does soap remove grease?", "Why do stars twinkle?",
    "How does a plane stay in the air?", "Why do dogs wag their tails?", "Why do we dream?",
    "How does a credit score work?", "Why do prices go up over time?", "How do tides work?",
    "Why do we have leap years?", "How do fireflies glow?", "Why does popcorn pop?",
    "How do submarines dive and come back up?", "Why do some trees lose their leaves in winter?",
    "How is chocolate made?", "Why does coffee keep people awake?", "How do earthquakes happen?",
    "Why do mosquitoes bite some people more than others?", "How is glass recycled?",
    "How do solar panels turn sunlight into electricity?", "Why do we need vitamin D?",
    "How does a refrigerator keep food cold?", "Why do balloons float when filled with helium?",
    "How do spiders spin webs?", "Why do our ears pop on a plane?", "How is paper made from trees?",
    "How does a hearing aid work?", "Why do people have different blood pressure?", "How do octopuses hide?",
]
CONCEPTS = [
    "inflation", "compound interest", "photosynthesis", "the greenhouse effect", "supply and demand",
    "a budget", "an index fund", "the water cycle", "evolution", "a food chain", "renewable energy",
    "mindfulness", "a carbon footprint", "the placebo effect", "cloud computing", "a password manager",
    "two-factor authentication", "a mortgage", "jet lag", "a time zone", "the scientific method",
    "recycling", "a balanced diet", "muscle memory", "a habit", "procrastination", "an allergy",
    "a sourdough starter", "composting", "the tax on income", "a pension", "insurance", "fermentation",
    "erosion", "a heat wave", "biodiversity", "an eclipse", "a meme", "a podcast", "open-source software",
]
CONCEPT_FORMS = ["What is {x}? Answer in a short paragraph.", "Give a beginner-friendly explanation of {x}.",
                 "Describe {x} and give one everyday example.", "Can you explain {x} without using jargon?"]
PAIRS = [
    ("tea", "coffee"), ("running", "swimming"), ("a laptop", "a tablet"), ("renting", "buying a home"),
    ("a paper notebook", "a notes app"), ("walking", "cycling to work"), ("a gas stove", "an induction hob"),
    ("e-mail", "a phone call"), ("a savings account", "investing in shares"), ("trains", "planes for short trips"),
    ("a small dog", "a large dog"), ("learning Spanish", "learning French"), ("a city break", "a beach holiday"),
    ("yoga", "pilates"), ("frozen vegetables", "fresh vegetables"), ("a desktop computer", "a laptop"),
    ("hardcover books", "audiobooks"), ("morning workouts", "evening workouts"), ("wool", "cotton"),
    ("a shower", "a bath"),
]
PAIR_FORMS = ["Compare {x} and {y}.", "Which would you choose, {x} or {y}? Explain briefly.",
              "What are the main differences between {x} and {y}?"]
PLANS = [
    "studying for a history exam in two weeks", "getting fit in three months", "a week of cheap dinners",
    "a relaxing Saturday at home", "learning to type faster", "cleaning the whole flat in one afternoon",
    "a child's birthday party at home", "saving money for a new bike", "a first week at a new job",
    "moving house next month", "a three-day visit to Rome", "reading twenty books this year",
    "starting a vegetable garden", "training for a five-kilometre run", "preparing a job interview",
    "a weekend without screens", "learning basic guitar chords", "decluttering a wardrobe",
    "a family trip to the seaside", "getting back into a sleep routine after a holiday",
]
PLAN_FORMS = ["Make me a simple plan for {x}.", "Can you help me organise {x}? A short list of steps is fine."]
RECOMMEND = [
    ("board games", "a family with young children"), ("books", "someone who loves mysteries"),
    ("houseplants", "a dark apartment"), ("hobbies", "a retired teacher"), ("snacks", "a long car journey"),
    ("exercises", "people who sit all day"), ("gift ideas", "a friend who likes cooking"),
    ("activities", "a rainy afternoon with kids"), ("easy recipes", "a student with a small kitchen"),
    ("podcast topics", "a beginner in science"), ("apps", "learning a new language"),
    ("day trips", "someone without a car"), ("breakfast ideas", "busy mornings"),
    ("ways to relax", "a stressful week"), ("games", "a party of ten adults"),
]
RECOMMEND_FORMS = ["Recommend five {x} for {y}.", "What {x} would you suggest for {y}?"]
HOW_TO = [
    "change a flat bicycle tyre", "make a cup of proper tea", "write a thank-you note", "tie a tie",
    "boil an egg with a soft yolk", "remove a coffee stain from a shirt", "start a conversation at a party",
    "prepare for a long hike", "set up a monthly budget", "politely say no to extra work",
    "clean a cast iron pan", "pack a suitcase efficiently", "make a simple tomato sauce",
    "introduce yourself in a meeting", "care for a goldfish", "iron a shirt", "back up photos from a phone",
    "calm down before an exam", "plant a tree", "make a paper airplane", "unclog a sink", "defrost a freezer",
    "choose a good watermelon", "keep a conversation going", "fold a fitted sheet", "brew coffee with a French press",
    "learn the names of new colleagues", "write a short speech for a friend's wedding", "wash a wool sweater",
    "make friends in a new city",
]
HOW_TO_FORMS = ["What are the steps to {x}?", "How can I {x}?"]
MESSAGES = [
    "your landlord about a broken window", "a friend you have not seen in a year", "your team about a new meeting time",
    "a shop about a missing delivery", "a coach to say your child will miss practice",
    "a neighbour to apologise for a noisy party", "a colleague who is leaving the company",
    "a client to confirm an appointment", "your manager asking to work from home on Friday",
    "a restaurant to book a table for eight", "a friend to thank them for a birthday gift",
    "a hotel asking about late check-in", "a teacher to thank them at the end of the year",
    "your family about holiday plans", "a plumber asking for a quote",
]
MESSAGE_FORMS = ["Write a short message to {x}.", "Help me write a polite note to {x}."]
SUMMARIES = [
    "the history of the Olympic Games", "how the internet began", "the life of Marie Curie",
    "the story of the Wright brothers", "the discovery of penicillin", "the Industrial Revolution",
    "the history of chocolate", "the invention of the telephone", "the Silk Road", "the Renaissance",
    "the history of the piano", "the first Moon landing", "the life of Leonardo da Vinci",
    "the story of the Great Wall of China", "the history of coffee", "the Vikings",
    "the invention of the printing press", "the history of tea", "the life of Nelson Mandela", "the Wild West",
]
SUMMARY_FORMS = ["Tell me briefly about {x}.", "In five sentences, what should I know about {x}?"]
LIST_ASKS = [
    "things to do when you can't sleep", "signs that a plant needs more water", "reasons to learn a second language",
    "ways to save energy at home", "questions to ask at the end of a job interview", "ways to reduce food waste",
    "things to check before buying a used car", "habits of people who manage their time well",
    "ways to make a small room look bigger", "things to teach a teenager about money",
    "ideas for a cheap date", "ways to stay motivated while studying", "fun facts about the ocean",
    "things to do on a long train ride", "ways to be a better listener", "safety tips for cycling in a city",
    "things every first aid kit should have", "ideas for a school science project", "ways to cool a room without air conditioning",
    "common mistakes new gardeners make",
]
LIST_FORMS = ["List some {x}.", "Give me a few {x}, one per line."]


def chat_prompts(seed: int = 3) -> dict[str, list[str]]:
    """Prompts by category (all chat); the caller gives them ids after the second set's."""
    r = random.Random(seed)
    chat = list(QUESTIONS)
    chat += [f.format(x=x) for x in CONCEPTS for f in _take(r, CONCEPT_FORMS, 3)]
    chat += [f.format(x=x, y=y) for x, y in PAIRS for f in _take(r, PAIR_FORMS, 2)]
    chat += [f.format(x=x) for x in PLANS for f in PLAN_FORMS]
    chat += [f.format(x=x, y=y) for x, y in RECOMMEND for f in RECOMMEND_FORMS]
    chat += [f.format(x=x) for x in HOW_TO for f in HOW_TO_FORMS]
    chat += [f.format(x=x) for x in MESSAGES for f in MESSAGE_FORMS]
    chat += [f.format(x=x) for x in SUMMARIES for f in SUMMARY_FORMS]
    chat += [f.format(x=x) for x in LIST_ASKS for f in LIST_FORMS]
    return {"chat": chat}
