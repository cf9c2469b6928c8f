"""The built-in training prompts: written for mtpchat from the templates and word lists below.

They come from no evaluation set and no public benchmark: each prompt is a template filled with
a subject, both written here, across four categories (code, math, chat, writing). Math prompts
get their numbers from a seeded generator, so the set is the same on every machine. The tasks
were chosen to share no five-word run with the project's development prompt files
(tests/test_train.py checks that), so `mtpchat bench` on those files measures prompts the
adapter never saw. `builtin_prompts()` returns them in a fixed interleaved order;
`--prompts FILE` (JSON Lines, {"id", "category", "prompt", "system"?}) replaces them.
"""
from __future__ import annotations

import random

from .prompts_chat import chat_prompts
from .prompts_more import more_prompts

CODE_TASKS = [
    "reverses the words in a sentence", "converts a Roman numeral to an integer",
    "finds the longest common prefix of a list of strings", "validates a simple email address",
    "parses a line of comma separated values that may contain quoted fields",
    "computes the moving average of a list with window k", "groups a list of words by their first letter",
    "rotates a matrix by 90 degrees clockwise", "returns all primes below n with a sieve",
    "turns a number of seconds into hours, minutes and seconds", "checks whether brackets in a string are balanced",
    "finds the second largest value in an array", "capitalizes the first letter of every sentence",
    "converts a temperature between Celsius and Fahrenheit", "chunks an array into pieces of size n",
    "computes the greatest common divisor of two integers", "checks whether two strings are anagrams",
    "gives the positions of two array values summing to a target", "converts snake_case to camelCase",
    "computes a factorial recursively", "finds the most frequent character in a string",
    "implements a least-recently-used cache with a fixed capacity", "sums the digits of an integer",
    "transposes a two-dimensional array", "generates all subsets of a small set", "counts the vowels in a string",
    "checks whether a year is a leap year", "shuffles a deck of cards", "formats a list of names as 'A, B and C'",
    "finds the median of an array of numbers", "implements run-length encoding of a string",
    "computes the dot product of two vectors", "converts an integer to its binary representation",
    "removes all whitespace from a string", "finds the longest word in a sentence",
    "checks whether a matrix is symmetric", "returns the intersection of two arrays without duplicates",
    "implements a queue using two stacks", "computes the power set size and prints every combination of k items",
    "validates a date string in the form YYYY-MM-DD", "pads a string on the left to a given width",
    "splits a URL into scheme, host, path and query", "computes the Levenshtein distance between two words",
    "finds all pairs in an array whose difference is k", "converts a hexadecimal color to RGB values",
    "computes the running total of an array", "returns the n largest values of an array",
    "detects a cycle in a linked list", "reverses a singly linked list",
    "computes the depth of a binary tree", "performs an in-order traversal of a binary tree",
    "implements insertion sort", "implements quicksort", "implements merge sort", "implements bubble sort",
    "counts the set bits of an integer", "finds the missing number in an array holding 1 to n",
    "checks whether a sentence is a pangram", "converts a string to title case",
    "truncates a string to n characters and adds an ellipsis", "computes compound interest over n years",
    "generates a random password of a given length", "finds the first non-repeating character of a string",
    "merges two dictionaries, summing the values of shared keys", "rounds a number to two decimal places",
    "tests if an integer is a perfect square", "computes the area of a circle from its radius",
    "converts kilometres to miles", "finds the longest increasing run in an array",
    "returns the unique values of an array in their first order", "zips two arrays into an array of pairs",
    "counts the lines, words and characters of a string", "computes the mean and standard deviation of numbers",
    "checks whether a string contains only digits", "replaces every vowel in a string with an asterisk",
    "computes the sum of the even numbers in an array", "draws a right triangle of stars with n rows",
    "prints the multiplication table of a number", "finds the maximum subarray sum (Kadane's algorithm)",
    "tests if an integer is an Armstrong number", "computes the n-th triangular number",
]
CODE_LANGS = ["Python", "JavaScript", "C", "Rust", "Go", "Java", "TypeScript", "C++", "Ruby", "Kotlin"]
CODE_FORMS = [
    "Write a {lang} function that {t}.",
    "In {lang}, write code that {t}.",
    "Show me a {lang} program that {t}.",
]
CODE_OTHER = [
    "What is the difference between {x} and {y}?",
    "When should I use {x} instead of {y}?",
    "Compare {x} and {y} in a few sentences.",
]
CODE_ABOUT_TASK = [
    "Write a short docstring for a function that {t}.",
    "How would you write unit tests for a function that {t}?",
    "Explain the time complexity of a function that {t}.",
    "Describe in plain words an algorithm that {t}.",
]
CODE_CONCEPTS = [("list", "tuple"), ("process", "thread"), ("stack", "queue"), ("class", "object"),
                 ("compiler", "interpreter"), ("array", "linked list"), ("hash map", "binary search tree"),
                 ("recursion", "iteration"), ("git merge", "git rebase"), ("TCP", "UDP"),
                 ("static typing", "dynamic typing"), ("mutex", "semaphore"), ("HTTP GET", "HTTP POST"),
                 ("SQL", "NoSQL databases"), ("unit tests", "integration tests"), ("a library", "a framework"),
                 ("pass by value", "pass by reference"), ("an abstract class", "an interface"),
                 ("synchronous code", "asynchronous code"), ("a shallow copy", "a deep copy"),
                 ("JSON", "XML"), ("inheritance", "composition"), ("a heap", "a sorted array"),
                 ("breadth-first search", "depth-first search"), ("a pointer", "a reference"),
                 ("Docker", "a virtual machine"), ("REST", "GraphQL"), ("a for loop", "a while loop")]
CODE_TERMS = ["closure", "memoization", "big O notation", "a race condition", "dependency injection",
              "a hash function", "garbage collection", "an API", "a unit test", "refactoring",
              "a regular expression", "a deadlock", "polymorphism", "encapsulation", "a lambda function",
              "tail recursion", "a generator", "a decorator", "immutability", "a callback",
              "an index in a database", "a foreign key", "caching", "a binary heap", "type inference",
              "a virtual environment", "continuous integration", "version control", "a segmentation fault",
              "an off-by-one error"]
SQL = ["list all customers who placed more than three orders", "find the average salary per department",
       "count the books published each year", "select the five most expensive products",
       "find employees without a manager", "delete rows older than thirty days from a log table",
       "join orders with customers and show the customer name for each order",
       "find duplicate email addresses in a users table", "list products that were never ordered",
       "show the number of students in each course", "find the newest order of every customer",
       "compute the total revenue per month", "rename a column in a table", "create a table of movies with a primary key",
       "find the departments with more than ten employees", "update the price of every product by five percent"]
SNIPPETS = ["[x * x for x in range(10) if x % 2 == 0]", "sorted(words, key=len, reverse=True)",
            "dict(zip(keys, values))", "' '.join(reversed(text.split()))", "sum(1 for c in s if c.isupper())",
            "const total = items.reduce((a, b) => a + b, 0);", "for (int i = 0; i < n; i++) sum += a[i];",
            "with open('log.txt') as f: lines = f.readlines()", "max(scores, key=scores.get)",
            "let doubled = nums.iter().map(|x| x * 2).collect::<Vec<_>>();", "grep -c error app.log",
            "SELECT name FROM users WHERE age > 30 ORDER BY name;", "x, y = y, x", "any(n < 0 for n in values)"]
SNIPPET_FORMS = ["Explain what this code does: `{s}`", "What does `{s}` return or print? Explain briefly."]

MATH = [
    "A shop sells notebooks at {a} cents each. How much do {b} notebooks cost in dollars? Show your steps.",
    "A cyclist rides {a} km in {c} hours. What is the average speed?",
    "What is {a} multiplied by {b}? Explain how you calculated it.",
    "Find x if {c}x + {a} = {b}.",
    "A garden is {c} m long and {d} m wide. What are its area and perimeter?",
    "If {d} friends share {a} apples equally, how many does each get and how many are left?",
    "What is {d} percent of {a}?",
    "A cake needs {d} eggs for {c} guests. How many eggs are needed for {e} guests?",
    "Tom has {a} marbles. He gives away {d} and then buys {c} more. How many does he have now?",
    "What is the sum of all whole numbers from 1 to {c}?",
    "Simplify the fraction {a}/{b}.",
    "A bus burns {d} liters of diesel every 100 km. How much diesel does a trip of {a} km need?",
    "Convert {a} minutes into hours and minutes.",
    "Is {a} a prime number? Explain.",
    "A price of {a} dollars is reduced by {d} percent. What is the new price?",
    "What is the average of {c}, {d}, {e} and {a}?",
    "A tank holds {a} liters and fills at {d} liters per minute. How long does it take to fill?",
    "Find the least common multiple of {c} and {e}.",
    "A square has a perimeter of {p} cm. What is its area?",
    "Explain how to compute {c} squared minus {d} squared without a calculator.",
    "A class has {e} students and {d} of them are absent. What fraction is present?",
    "What is {a} divided by {c}, with the remainder?",
    "A worker earns {d} dollars an hour. How much does she earn in {c} days of {e} hours?",
    "Round {a}.{b} to the nearest whole number and explain why.",
    "A box holds {c} rows of {e} chocolates. How many chocolates are in {d} boxes?",
    "Anna reads {d} pages a day. How many days does a book of {a} pages take her?",
    "What is {c} to the power of 3?",
    "A rope of {a} cm is cut into {c} equal pieces. How long is each piece?",
    "The temperature was {d} degrees and fell by {e} degrees. What is it now?",
    "A map scale is 1 cm to {c} km. Two towns are {d} cm apart on the map. How far apart are they?",
    "A phone costs {a} dollars plus {d} percent tax. What is the total?",
    "What is the perimeter of a triangle with sides {c}, {d} and {e}?",
    "Write {a} as a product of prime factors.",
    "Sam saves {d} dollars a week. How many weeks until he has {a} dollars?",
]
MATH_CONCEPTS = ["the Pythagorean theorem", "what a derivative means", "why dividing by zero is undefined",
                 "how to find a percentage increase", "what a prime number is", "the order of operations",
                 "what a logarithm is", "how compound interest works", "what a probability of 0.25 means",
                 "how to solve a quadratic equation", "what the mean, median and mode are",
                 "why the angles of a triangle add up to 180 degrees", "what a negative number is",
                 "how long division works", "what an integral measures", "what a ratio is",
                 "how to convert a fraction to a decimal", "what the number pi is", "what a function is in math",
                 "how to estimate a square root", "what standard deviation tells you", "what a vector is",
                 "why any number to the power of zero is one", "what an exponent is", "what a matrix is"]

CHAT = [
    "What are some good habits for a calm evening routine?", "How do I make a simple tomato sauce?",
    "Why is the sky blue?", "Can you suggest a few hobbies I could start this winter?",
    "How do plants make their food?", "What should I pack for a day at the beach?",
    "How can I stay focused while studying?", "How does a refrigerator keep food cold?",
    "Give me tips for learning a new language.", "Why do cats purr?",
    "What are the planets of the solar system?", "How can I save money on groceries?",
    "What is a good way to start running?", "Explain how a rainbow forms.",
    "How do I care for a houseplant that has yellow leaves?", "What makes bread rise?",
    "How do airplanes stay in the air?", "What causes the seasons?",
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
    "How do noise-cancelling headphones work?", "What is a good way to organize my week?",
    "How do I start a vegetable garden on a balcony?", "Why do onions make us cry?",
    "What should I do if I can't fall asleep?", "How does a microwave heat food?",
    "Why do some people get seasick?", "What are good questions to ask at the end of an interview?",
    "How do I make friends in a new city?", "What is the best way to learn to touch type?",
    "How do birds know where to migrate?", "Why is the ocean salty?", "How does a credit score work?",
    "What can I cook with rice, eggs and spinach?", "How do I keep my laptop battery healthy?",
    "Why do we yawn?", "How do glasses correct vision?", "What is a carbon footprint?",
    "How do I ask my manager for feedback?", "What are some easy stretches for people who sit all day?",
    "How does a bill become a law in a parliament?", "Why do stars twinkle?",
    "How do I choose a good book to read next?", "What makes a good presentation?",
    "Hello! What can you help me with?", "Thanks for your help earlier. Can you explain tides once more, briefly?",
    "What is a budget and how do I make one?", "How does soap clean our hands?",
    "Why do we need sleep?", "How are mountains formed?", "What is the greenhouse effect?",
    "How can I make my mornings less rushed?", "What are some tips for a long car trip with kids?",
]
CHAT_TOPICS = ["the Roman Empire", "the printing press", "coral reefs", "electric cars",
               "earthquakes", "the history of chess", "coffee", "penguins",
               "the moon landing", "renewable energy", "the Great Wall of China", "jazz music", "honeybees",
               "glaciers", "the invention of the telephone", "deserts", "the Olympic Games", "mushrooms",
               "the Amazon rainforest", "ancient Egypt", "the human brain", "volcanoes", "the Silk Road",
               "dinosaurs", "the Renaissance", "whales", "the Industrial Revolution", "tea", "the Sahara",
               "the periodic table", "the Vikings", "hurricanes", "the violin", "chocolate", "the Moon",
               "Mount Everest", "the bicycle", "antibiotics", "the steam engine", "octopuses",
               "the Eiffel Tower", "wind power", "sharks", "the Maya civilization", "comets",
               "the piano", "rice farming", "the Arctic", "bridges", "the first computers"]
CHAT_FORMS = ["Tell me about {x}.", "Give me three interesting facts about {x}.",
              "Explain {x} to a child.", "What are the most important things to know about {x}?",
              "Summarize what {x} is in a few sentences.", "Why is {x} important?"]

WRITING_FORMS = ["a short poem", "a haiku", "a short story of about 150 words", "a limerick",
                 "a friendly email", "a product description", "a diary entry", "a short speech",
                 "a motivational message", "a four-line rhyme", "an opening paragraph for a novel",
                 "a short dialogue between two characters", "a tweet", "a riddle", "a song chorus",
                 "a postcard message"]
WRITING_SUBJECTS = ["a rainy morning in the city", "a robot learning to paint", "the first day of school",
                    "an old lighthouse", "a cat who wants to fly", "friendship", "the ocean at night",
                    "a forgotten key", "autumn leaves", "a bakery on a quiet street", "a journey to Mars",
                    "a lost umbrella", "the last day of summer", "a dragon who is afraid of the dark",
                    "a garden in spring", "a busy train station", "a snowman", "a new invention",
                    "a mountain village", "a letter from the future", "a grandmother's recipe",
                    "a fox in the snow", "a library at midnight", "a river that talks", "moving to a new house",
                    "a football match", "a broken clock", "the smell of coffee", "a kite on a windy day",
                    "a small boat", "a birthday surprise", "the city at dawn", "a shy giant",
                    "a summer thunderstorm", "a pair of old boots", "the first snow", "a talking parrot",
                    "a market on Saturday", "an astronaut's window", "a quiet forest"]
WRITING_EDIT = ["Rewrite this sentence to sound more formal: '{s}'", "Make this sentence shorter: '{s}'",
                "Fix the grammar in this sentence: '{s}'", "Turn this sentence into a question: '{s}'",
                "Rewrite this sentence for a child: '{s}'"]
SENTENCES = ["we was going to the store but it were closed", "hey, can u send me the report asap",
             "the meeting that we had yesterday was really long and it did not really decide anything",
             "i think that maybe we should probably try to finish the project soon",
             "the dog runned fast across the park", "this product is super good and everyone should buy it",
             "me and him went to see the movie", "the weather today is nice and sunny and warm",
             "their going to the concert tomorrow night", "the results of the experiment was surprising",
             "please find attached the document which you have requested from us last week",
             "she dont like vegetables very much", "our team have won the championship again",
             "the new software update makes the computer run much more faster",
             "i has finished my homework already", "the children plays in the garden every afternoon",
             "due to the fact that it was raining we stayed inside", "he go to work by bus every day",
             "the concert was cancelled because of the singer was sick", "can you borrow me your pen"]
WRITING_TASKS = ["Write a short, polite message asking a neighbour to turn down loud music.",
                 "Write a two-sentence summary of why reading is valuable.",
                 "Write a short bio for a baker who loves cycling.",
                 "Write three slogans for a bicycle repair shop.",
                 "Write a cheerful good-morning message for a team chat.",
                 "Write instructions for making a paper airplane.",
                 "Write a short apology for replying late to an email.",
                 "Write a welcome message for new members of a hiking club."]


SEQUENCES = ["Count from {a} to {b}, separated by commas.", "List the even numbers from {a} to {b}.",
             "Count down from {b} to {a}.", "Write the numbers from {a} to {b}, one per line.",
             "List the multiples of {c} up to {m}.", "Write the first {c} square numbers.",
             "Count by {c}s from {a} to {m}.", "List the odd numbers between {a} and {b}."]
LISTS = ["the days of the week", "the months of the year", "the letters of the alphabet", "the seven continents",
         "the colours of the rainbow", "the first ten prime numbers", "the planets in order from the Sun",
         "the notes of a major scale", "the four seasons", "the Roman numerals from I to XII"]


def _sequences(r: random.Random) -> list[str]:
    out = []
    for _ in range(6):
        for tmpl in SEQUENCES:
            a = r.randint(1, 20)
            c = r.randint(2, 9)
            out.append(tmpl.format(a=a, b=a + r.randint(10, 40), c=c, m=c * r.randint(8, 15)))
    out += [f"List {x}, separated by commas." for x in LISTS]
    out += [f"Write {x} as a numbered list." for x in LISTS]
    return out


def _math(r: random.Random, reps: int) -> list[str]:
    out = []
    for _ in range(reps):
        for tmpl in MATH:
            a, b = r.randint(12, 480), r.randint(3, 60)
            c, d, e = r.randint(2, 12), r.randint(2, 25), r.randint(3, 30)
            out.append(tmpl.format(a=a, b=b, c=c, d=d, e=e, p=4 * r.randint(3, 40)))
    return out + [f"Explain {x}." for x in MATH_CONCEPTS]


def builtin_prompts(seed: int = 0) -> list[dict]:
    r = random.Random(seed)
    code, chat, writing = [], [], []
    for i, t in enumerate(CODE_TASKS):
        for j in range(3):
            lang = CODE_LANGS[(i + 3 * j) % len(CODE_LANGS)]
            code.append(CODE_FORMS[(i + j) % len(CODE_FORMS)].format(lang=lang, t=t))
        code.append(CODE_ABOUT_TASK[i % len(CODE_ABOUT_TASK)].format(t=t))
    for j, form in enumerate(CODE_OTHER):
        for x, y in CODE_CONCEPTS[j::2] if j else CODE_CONCEPTS:
            code.append(form.format(x=x, y=y))
    code += [f"Explain what {x} means in programming, with a short example." for x in CODE_TERMS]
    code += [f"Write SQL to {q}." for q in SQL]
    code += [SNIPPET_FORMS[i % 2].format(s=s) for i, s in enumerate(SNIPPETS)]
    math = _math(r, 12)
    chat += CHAT
    for i, x in enumerate(CHAT_TOPICS):
        for j in range(3):
            chat.append(CHAT_FORMS[(i + 2 * j) % len(CHAT_FORMS)].format(x=x))
    for i, s in enumerate(WRITING_SUBJECTS):
        for j in range(4):
            writing.append(f"Write {WRITING_FORMS[(i + 5 * j) % len(WRITING_FORMS)]} about {s}.")
    for i, s in enumerate(SENTENCES):
        for j in range(2):
            writing.append(WRITING_EDIT[(i + 2 * j) % len(WRITING_EDIT)].format(s=s))
    writing += WRITING_TASKS
    out = []
    # counting and listing prompts came later: their own category and generator, so that the
    # ids (and cached answers) of the four others stay what they were
    groups = {"code": code, "math": math, "chat": chat, "writing": writing, "lists": _sequences(random.Random(seed + 1))}
    for cat, items in groups.items():
        items[:] = list(dict.fromkeys(items))  # a few template fills coincide
        r.shuffle(items)
    _interleave(out, groups, "")
    # later sets follow with ids of their own, so that earlier ids and cached answers stay valid:
    # the second (prompts_more.py), then the third (prompts_chat.py, everyday chat)
    for suffix, later in (("2", more_prompts()), ("3", chat_prompts())):
        seen = {p["prompt"] for p in out}
        for items in later.values():
            items[:] = [x for x in dict.fromkeys(items) if x not in seen]
            r.shuffle(items)
        _interleave(out, later, suffix)
    return out


def _interleave(out: list[dict], groups: dict[str, list[str]], suffix: str) -> None:
    """Append so that any first N prompts of a set cover every category."""
    longest = max(len(v) for v in groups.values())
    for i in range(longest):
        for cat, items in groups.items():
            if i < len(items):
                out.append({"id": f"{cat}{suffix}-{i:04d}", "category": cat, "prompt": items[i]})
