"""The built-in training prompts: written for mtpchat from the templates and word lists below.

They come from no evaluation set and no public benchmark (and not from the project's own
development prompt files): each prompt is a template filled with a subject, both written here,
across four categories (code, math, chat, writing). Math prompts get their numbers from a seeded
generator, so the set is the same on every machine. `builtin_prompts()` returns them in a fixed
interleaved order; `--prompts FILE` (JSON Lines, {"id", "category", "prompt", "system"?}) replaces them.
"""
from __future__ import annotations

import random

CODE_TASKS = [
    "reverses the words in a sentence", "checks whether a string is a palindrome, ignoring case and spaces",
    "counts how often each word appears in a text", "merges two sorted lists into one sorted list",
    "returns the n-th Fibonacci number iteratively", "removes duplicate items from a list while keeping order",
    "flattens a nested list of any depth", "converts a Roman numeral to an integer",
    "finds the longest common prefix of a list of strings", "validates a simple email address",
    "parses a CSV line that may contain quoted fields", "computes the moving average of a list with window k",
    "groups a list of words by their first letter", "rotates a matrix by 90 degrees clockwise",
    "returns all prime numbers below n using a sieve", "turns a number of seconds into hours, minutes and seconds",
    "checks whether brackets in a string are balanced", "finds the second largest number in a list",
    "implements binary search on a sorted list", "capitalizes the first letter of every sentence",
    "reads a text file and prints its ten most common words", "converts a temperature between Celsius and Fahrenheit",
    "chunks a list into pieces of size n", "computes the greatest common divisor of two numbers",
    "implements a tiny stack class with push, pop and peek", "checks whether two strings are anagrams",
    "returns the indices of two numbers in a list that add up to a target", "converts snake_case to camelCase",
    "computes the factorial of a number recursively", "finds the most frequent character in a string",
    "implements a least-recently-used cache with a fixed capacity", "sums the digits of an integer",
    "transposes a list of lists", "generates all subsets of a small set", "counts vowels in a string",
    "checks whether a year is a leap year", "shuffles a deck of cards represented as strings",
    "formats a list of names as 'A, B and C'", "finds the median of a list of numbers",
    "implements run-length encoding of a string", "computes the dot product of two vectors",
]
CODE_LANGS = ["Python", "Python", "Python", "JavaScript", "C", "Rust", "Go", "Java", "TypeScript", "Bash"]
CODE_OTHER = [
    "Explain what the term '{x}' means in programming, with a short example.",
    "What is the difference between {x} and {y}?",
    "Write a short docstring for a function that {t}.",
    "How would you write unit tests for a function that {t}?",
    "Write SQL to {q}.",
    "Explain the time complexity of a function that {t}.",
]
CODE_CONCEPTS = [("list", "tuple"), ("process", "thread"), ("stack", "queue"), ("class", "object"),
                 ("compiler", "interpreter"), ("array", "linked list"), ("hash map", "binary search tree"),
                 ("recursion", "iteration"), ("git merge", "git rebase"), ("TCP", "UDP"),
                 ("static typing", "dynamic typing"), ("mutex", "semaphore")]
SQL = ["list all customers who placed more than three orders", "find the average salary per department",
       "count the books published each year", "select the five most expensive products",
       "find employees without a manager", "delete rows older than thirty days from a log table",
       "join orders with customers and show the customer name for each order",
       "find duplicate email addresses in a users table"]

MATH = [
    "A shop sells pencils at {a} cents each. How much do {b} pencils cost in dollars? Show your steps.",
    "A train travels {a} km in {c} hours. What is its average speed?",
    "What is {a} multiplied by {b}? Explain how you calculated it.",
    "Solve for x: {c}x + {a} = {b}.",
    "A rectangle is {c} m long and {d} m wide. What are its area and perimeter?",
    "If {d} friends share {a} apples equally, how many does each get and how many are left?",
    "What is {d} percent of {a}?",
    "A recipe needs {d} eggs for {c} people. How many eggs are needed for {e} people?",
    "Tom has {a} marbles. He gives away {d} and then buys {c} more. How many does he have now?",
    "What is the sum of all whole numbers from 1 to {c}?",
    "Simplify the fraction {a}/{b}.",
    "A car uses {d} liters of fuel per 100 km. How much fuel does it need for {a} km?",
    "Convert {a} minutes into hours and minutes.",
    "Is {a} a prime number? Explain.",
    "A price of {a} dollars is reduced by {d} percent. What is the new price?",
    "What is the average of {c}, {d}, {e} and {a}?",
    "A tank holds {a} liters and fills at {d} liters per minute. How long does it take to fill?",
    "Find the least common multiple of {c} and {e}.",
    "A square has a perimeter of {p} cm. What is its area?",
    "Explain how to compute {c} squared minus {d} squared without a calculator.",
]
MATH_CONCEPTS = ["the Pythagorean theorem", "what a derivative means", "why dividing by zero is undefined",
                 "how to find a percentage increase", "what a prime number is", "the order of operations",
                 "what a logarithm is", "how compound interest works", "what a probability of 0.25 means",
                 "how to solve a quadratic equation", "what the mean, median and mode are",
                 "why the angles of a triangle add up to 180 degrees"]

CHAT = [
    "What are some good habits for getting better sleep?", "How do I make a simple tomato sauce?",
    "Why is the sky blue?", "Can you suggest a few hobbies I could start this winter?",
    "How do plants make their food?", "What should I pack for a weekend hiking trip?",
    "How can I stay focused while working from home?", "What is the difference between weather and climate?",
    "How does a refrigerator keep food cold?", "Give me tips for learning a new language.",
    "Why do cats purr?", "How do vaccines work?", "What are the planets of the solar system?",
    "How can I save money on groceries?", "What is a good way to start running?",
    "Explain how a rainbow forms.", "How do I care for a houseplant that has yellow leaves?",
    "What makes bread rise?", "How do airplanes stay in the air?", "What causes the seasons?",
    "Can you recommend ways to reduce stress before an exam?", "How does recycling plastic work?",
    "What is the difference between a virus and a bacterium?", "How do I politely decline an invitation?",
    "Why do we have leap years?", "How do bees make honey?", "What is inflation?",
    "How can I be a better listener?", "Why does ice float on water?", "How does a compass work?",
    "What should I consider when adopting a dog?", "How do I clean a cast iron pan?",
    "What is machine learning, in simple terms?", "Why do leaves change color in autumn?",
    "How do I prepare for a job interview?", "What is the water cycle?", "How do volcanoes form?",
    "What are some fun things to do on a rainy day?", "How does the heart pump blood?",
    "What is a healthy breakfast I can make in five minutes?", "How do solar panels produce electricity?",
    "Why is exercise good for the brain?", "How do I write a good thank-you note?",
    "What is the internet, and how does data travel across it?", "Why do we dream?",
    "How can I keep my passwords safe?", "What is photosynthesis?", "How do tides work?",
    "Hi! Can you tell me a fun fact about octopuses?", "What are the benefits of drinking water?",
]
CHAT_TOPICS = ["the Roman Empire", "black holes", "the printing press", "coral reefs", "electric cars",
               "the human immune system", "earthquakes", "the history of chess", "coffee", "penguins",
               "the moon landing", "renewable energy", "the Great Wall of China", "jazz music", "honeybees",
               "glaciers", "the invention of the telephone", "deserts", "the Olympic Games", "mushrooms"]
CHAT_FORMS = ["Tell me about {x}.", "Give me three interesting facts about {x}.",
              "Explain {x} to a ten-year-old.", "What are the most important things to know about {x}?",
              "Summarize what {x} is in a few sentences."]

WRITING_FORMS = ["a short poem", "a haiku", "a short story of about 150 words", "a limerick",
                 "a friendly email", "a product description", "a diary entry", "a short speech",
                 "a motivational message", "a four-line rhyme", "an opening paragraph for a novel",
                 "a short dialogue between two characters"]
WRITING_SUBJECTS = ["a rainy morning in the city", "a robot learning to paint", "the first day of school",
                    "an old lighthouse", "a cat who wants to fly", "friendship", "the ocean at night",
                    "a forgotten key", "autumn leaves", "a bakery on a quiet street", "a journey to Mars",
                    "a lost umbrella", "the last day of summer", "a dragon who is afraid of the dark",
                    "a garden in spring", "a busy train station", "a snowman", "a new invention",
                    "a mountain village", "a letter from the future"]
WRITING_EDIT = ["Rewrite this sentence to sound more formal: '{s}'", "Make this sentence shorter: '{s}'",
                "Fix the grammar in this sentence: '{s}'", "Turn this sentence into a question: '{s}'"]
SENTENCES = ["we was going to the store but it were closed", "hey, can u send me the report asap",
             "the meeting that we had yesterday was really long and it did not really decide anything",
             "i think that maybe we should probably try to finish the project soon",
             "the dog runned fast across the park", "this product is super good and everyone should buy it",
             "me and him went to see the movie", "the weather today is nice and sunny and warm"]


def builtin_prompts(seed: int = 0) -> list[dict]:
    r = random.Random(seed)
    code, math, chat, writing = [], [], [], []
    for i, t in enumerate(CODE_TASKS):
        lang = CODE_LANGS[i % len(CODE_LANGS)]
        code.append(f"Write a {lang} function that {t}.")
    for j, form in enumerate(CODE_OTHER):
        for i in range(6):
            x, y = CODE_CONCEPTS[(i * 5 + j) % len(CODE_CONCEPTS)]
            code.append(form.format(x=x, y=y, t=CODE_TASKS[(i * 7 + j * 3) % len(CODE_TASKS)], q=SQL[(i + j) % len(SQL)]))
    for rep in range(3):
        for tmpl in MATH:
            a, b = r.randint(12, 480), r.randint(3, 60)
            c, d, e = r.randint(2, 12), r.randint(2, 25), r.randint(3, 30)
            math.append(tmpl.format(a=a, b=b, c=c, d=d, e=e, p=4 * r.randint(3, 40)))
    math += [f"Explain {x}." for x in MATH_CONCEPTS]
    chat += CHAT
    for i, x in enumerate(CHAT_TOPICS):
        chat.append(CHAT_FORMS[i % len(CHAT_FORMS)].format(x=x))
        chat.append(CHAT_FORMS[(i + 2) % len(CHAT_FORMS)].format(x=x))
    for i, s in enumerate(WRITING_SUBJECTS):
        writing.append(f"Write {WRITING_FORMS[i % len(WRITING_FORMS)]} about {s}.")
        writing.append(f"Write {WRITING_FORMS[(i + 5) % len(WRITING_FORMS)]} about {s}.")
    for i, s in enumerate(SENTENCES):
        writing.append(WRITING_EDIT[i % len(WRITING_EDIT)].format(s=s))
        writing.append(WRITING_EDIT[(i + 1) % len(WRITING_EDIT)].format(s=s))
    out = []
    groups = {"code": code, "math": math, "chat": chat, "writing": writing}
    for cat, items in groups.items():
        r.shuffle(items)
    # interleave so that any first N prompts cover every category
    longest = max(len(v) for v in groups.values())
    for i in range(longest):
        for cat, items in groups.items():
            if i < len(items):
                out.append({"id": f"{cat}-{i:03d}", "category": cat, "prompt": items[i]})
    return out
