"""The second set of built-in training prompts, added when the first set (prompts.py) had been
learned as far as it would go: the held-out acceptance of run 4 grew only a third as much as
run 3's on the same data. Written here like the first set, weighted towards what the drafts
still miss most: Python code and everyday chat prose. Same rule: no six-word run shared with
the development prompt files (tests/test_train.py checks it)."""
from __future__ import annotations

import random

PY_TASKS = [
    "returns the n-th number of the Lucas sequence", "removes duplicate lines from a text file",
    "counts how many times each letter appears in a string", "returns the k most common words of a text",
    "splits a list into two halves", "checks whether a list is sorted in ascending order",
    "returns the indices of every occurrence of a value in a list", "inverts a dictionary, mapping values to keys",
    "converts a list of tuples into a dictionary", "finds the common elements of three lists",
    "returns the product of all numbers in a list", "computes the cumulative product of a list",
    "converts a string of digits into an integer without using int()", "checks whether a string is a valid IPv4 address",
    "returns the number of days between two dates", "formats a number with thousands separators",
    "reads a JSON file and returns the value of a given key", "writes a list of dicts to a CSV file",
    "computes the nth power of a number by repeated squaring", "returns every prime factor of an integer",
    "finds the longest palindromic substring", "removes every punctuation character from a string",
    "generates the first n rows of Pascal's triangle", "converts an integer to a Roman numeral",
    "finds the smallest missing positive integer in a list", "sorts a list of dicts by a given key",
    "returns the words of a sentence sorted by length", "counts the words in a text file",
    "checks whether two rectangles overlap", "computes the distance between two points",
    "validates that a password has a digit, an uppercase letter and eight characters",
    "returns the elements of a matrix in spiral order", "computes the sum of a nested list of numbers",
    "returns the last n lines of a file", "converts a dict of lists into a list of dicts",
    "computes the mode of a list of numbers", "finds all anagrams of a word in a list of words",
    "rotates a list to the right by k steps", "interleaves two lists element by element",
    "computes the average word length of a sentence", "returns True if a number is a power of two",
    "counts the uppercase and lowercase letters in a string", "returns the Collatz sequence of a number",
    "compresses consecutive spaces in a string into one", "converts a binary string to an integer",
    "finds the kth smallest element of a list", "checks whether a string has all unique characters",
    "returns the difference between the largest and smallest values of a list",
    "builds a frequency table of the lengths of words", "merges overlapping intervals",
    "finds every duplicate value in a list", "replaces each word of a text using a dictionary of synonyms",
    "computes simple interest from principal, rate and years", "returns the digits of an integer as a list",
    "checks whether a number reads the same backwards", "removes the None values from a list",
    "groups numbers into even and odd lists", "counts the occurrences of a substring in a string",
    "returns the longest common subsequence of two strings", "implements a simple stopwatch class",
    "computes the body mass index from weight and height", "converts a list of words to pig latin",
    "checks whether a sudoku row is valid", "returns the middle element of a list",
    "finds the first repeated word in a sentence", "computes the sum of squares from 1 to n",
    "parses a query string into a dictionary", "returns a histogram of values as lines of stars",
]
# "Write a Python function that" + a verb is how the dev prompts start, so these forms say
# "which" or "code that" instead: the six-word check would flag the rest
PY_FORMS = ["Write a Python function which {t}.", "Write Python code that {t}.",
            "Can you write a Python function which {t}?", "I need Python code that {t}. Please write it."]
OTHER_LANG_FORMS = ["Write a {lang} function which {t}.", "How would you write a function in {lang} that {t}?"]
OTHER_LANGS = ["JavaScript", "Java", "C", "Go", "Rust", "TypeScript", "C#", "PHP", "Swift", "Kotlin"]

CLASSES = [("BankAccount", "deposit, withdraw and balance"), ("Queue", "enqueue, dequeue and size"),
           ("Rectangle", "area, perimeter and is_square"), ("Counter", "increment, decrement and reset"),
           ("TodoList", "add, remove and list_items"), ("Temperature", "to_celsius and to_fahrenheit"),
           ("Matrix", "add, multiply and transpose"), ("Library", "add_book, lend_book and return_book"),
           ("Circle", "area, circumference and scale"), ("ShoppingCart", "add_item, remove_item and total"),
           ("Timer", "start, stop and elapsed"), ("Vector2D", "add, subtract and length"),
           ("Student", "add_grade, average and best_grade"), ("Inventory", "add, remove and count"),
           ("PhoneBook", "add_contact, find and delete"), ("LinkedList", "append, prepend and find"),
           ("Point", "distance_to and move"), ("Playlist", "add_song, shuffle and next_song")]
CLASS_FORMS = ["Write a Python class `{n}` with {m} methods.", "Create a {lang} class called {n} that has {m} methods."]

HOW_PY = ["read a file line by line", "sort a dictionary by its values", "remove an item from a list",
          "check if a key exists in a dictionary", "get the current date and time", "reverse a string",
          "convert a string to a number", "merge two lists", "find the length of a list", "handle an exception",
          "loop over a dictionary", "write text to a file", "make an HTTP request", "parse JSON",
          "create a virtual environment", "count items with collections.Counter", "use a list comprehension",
          "format a string with f-strings", "generate a random number", "split a string into words",
          "copy a list", "measure how long code takes to run", "read command line arguments",
          "use enumerate in a loop", "join a list of strings", "define a default argument",
          "check the type of a variable", "round a float", "sort a list of tuples by the second item",
          "remove duplicates from a list while keeping order", "use a lambda with sorted",
          "create a class with a constructor", "open a CSV file", "use a while loop with break",
          "convert a list to a set", "get the last element of a list"]
HOW_FORMS = ["How do I {x} in Python?", "What is the best way to {x} in Python? Show an example."]

BASH = ["counts the lines of every .txt file in a folder", "renames all .jpeg files to .jpg",
        "backs up a directory into a dated tar archive", "prints the ten most common words of a file",
        "checks whether a website answers with HTTP 200", "deletes log files older than seven days",
        "prints the disk usage of each subdirectory", "finds every file containing a given word",
        "loops over the numbers 1 to 10 and prints their squares", "asks for a name and greets the user",
        "checks whether a file exists before reading it", "prints the current date in ISO format",
        "counts the running processes of a user", "replaces a word in every file of a folder",
        "prints the sizes of the three biggest folders", "converts every file name in a folder to lowercase"]
BASH_FORMS = ["Write a bash script which {t}.", "Give me a shell command or script that {t}."]

SQL_MORE = ["returns the three most popular products by number of orders", "lists the employees hired this year",
            "counts orders per customer and sorts them from most to least", "finds the highest salary in each department",
            "shows customers who have not ordered anything", "returns the average rating of each movie",
            "lists cities with more than five customers", "finds the total sales for each product category",
            "returns the second highest salary", "lists students whose grade is above the class average",
            "deletes duplicate rows while keeping one copy", "counts users who signed up each month"]
SQL_FORMS = ["Write a SQL statement that {t}.", "How can I write SQL that {t}?"]

BUGGY = ["def add(a, b): return a - b", "for i in range(10) print(i)", "if x = 5: print('five')",
         "def mean(xs): return sum(xs) / len(x)", "nums = [1, 2, 3]; print(nums[3])",
         "function sq(x) { return x * x; } console.log(sq())", "while True: print('hi')",
         "def last(xs): return xs[len(xs)]", "total = 0\nfor n in nums: total =+ n",
         "name = input('Name: ')\nprint('Hello ' + nme)", "def is_even(n): return n % 2 == 1",
         "words = text.split(',').strip()"]
BUGGY_FORMS = ["Find and fix the bug in this code: `{s}`", "What is wrong with this code? `{s}`"]
TRANSLATE = ["def square(x):\n    return x * x", "print(sum(range(1, 11)))", "names = [n.upper() for n in names]",
             "for i in range(5):\n    print(i * 2)", "def greet(name):\n    return f'Hello, {name}!'",
             "evens = [x for x in nums if x % 2 == 0]", "d = {'a': 1, 'b': 2}\nfor k, v in d.items(): print(k, v)",
             "def fact(n):\n    return 1 if n == 0 else n * fact(n - 1)"]
TRANSLATE_TO = ["JavaScript", "Java", "Go", "C++", "Rust", "Ruby"]

CHAT_TOPICS = ["black holes", "the water on Mars", "the immune system", "the French language", "the Nile",
               "tornadoes", "the stock market", "bamboo", "hot air balloons", "the Aztecs", "lightning",
               "the ozone layer", "elephants", "the Internet of Things", "submarines", "the Northern Lights",
               "the ancient Greeks", "rainforests", "nuclear power", "the printing of money", "ants",
               "satellites", "the human skeleton", "wolves", "the history of pizza", "cheese making",
               "the Pacific Ocean", "tsunamis", "3D printing", "the Titanic", "the samurai", "dolphins",
               "the Milky Way", "the metric system", "windmills", "the history of the bicycle race",
               "vaccines", "blood types", "the Statue of Liberty", "earthworms", "the Great Barrier Reef",
               "the human eye", "the first cars", "paper", "the Beatles", "the Himalayas", "sleep cycles",
               "owls", "the Roman roads", "glass making", "electric guitars", "the Apollo missions",
               "rain clouds", "the Andes", "the history of football", "bats", "the calendar",
               "robots in factories", "the Aurora Australis", "kangaroos"]
CHAT_FORMS = ["Tell me something interesting about {x}.", "Explain {x} in simple words.",
              "I'm curious about {x}. Can you explain it?", "Write a short paragraph about {x}.",
              "What should a beginner know about {x}?", "Give me a quick overview of {x}."]
KID = ["how rain forms", "what gravity is", "why we have day and night", "what electricity is",
       "how a seed grows into a plant", "why the Moon changes shape", "what germs are", "how fish breathe",
       "what a volcano is", "why we need to brush our teeth", "how a rainbow gets its colors",
       "what the Sun is made of", "how sound travels", "why snow is white", "what a computer does",
       "how magnets work", "why birds can fly", "where wind comes from", "what an atom is", "how money works"]
KID_FORMS = ["Explain {x} to a seven-year-old.", "How would you explain {x} to a small child?"]
PROS_CONS = ["living in a big city", "owning a car", "online learning", "electric scooters", "social media",
             "remote meetings", "getting a pet", "buying a house", "studying abroad", "nuclear energy",
             "self-driving cars", "eating out every day", "wearing a school uniform", "a four-day work week",
             "smartphones for children", "freelancing", "homeschooling", "public transport",
             "reading e-books", "shopping online", "living alone", "taking a gap year"]
PROS_CONS_FORMS = ["List the advantages and disadvantages of {x}.", "Is {x} a good idea? Give arguments on both sides."]
TRIPS = ["a week of hiking in the mountains", "a ski holiday", "a business trip of two days", "a long flight",
         "a summer festival", "a road trip with friends", "a trip to a rainy city", "a first visit to a foreign country",
         "a day at an amusement park", "a picnic in the park", "a cycling tour", "a sailing weekend"]
TRIP_FORMS = ["What should I bring on {x}?", "Help me prepare for {x}. What do I need?"]
TIPS = ["learning to cook", "keeping a diary", "saving for a holiday", "learning to swim as an adult",
        "speaking in public", "working from a café", "waking up early", "drinking less coffee",
        "planning a wedding", "keeping a tidy desk", "learning to draw", "growing tomatoes",
        "training a puppy", "reading more books", "running a first marathon", "moving to another country",
        "writing a CV", "staying warm in winter", "eating more vegetables", "making new friends at work",
        "taking better photos with a phone", "learning chess", "spending less time on the phone",
        "keeping plants alive", "cooking for a large group", "staying safe online"]
TIP_FORMS = ["Give me some tips for {x}.", "What advice would you give someone who is {x}?",
             "I'm {x}. Where should I start?"]
HOW_WORKS = ["a rocket", "a dishwasher", "an electric motor", "a thermostat", "a lock and key", "a battery",
             "Wi-Fi", "a camera", "a touch screen", "an elevator", "a washing machine", "GPS",
             "a light bulb", "a vaccine", "a hybrid car", "a search engine", "a smoke detector",
             "a helicopter", "a wind turbine", "an escalator", "a bar code scanner", "a kettle",
             "a parachute", "a telescope", "a 3D printer", "a fridge's freezer", "the lungs", "the kidneys"]
HOW_WORKS_FORMS = ["How does {x} work?", "Can you describe how {x} works, step by step?"]
DIFF = [("a lake", "a pond"), ("a frog", "a toad"), ("baking soda", "baking powder"), ("a hurricane", "a typhoon"),
        ("a crocodile", "an alligator"), ("a city", "a town"), ("a cold", "the flu"), ("speed", "velocity"),
        ("a meteor", "a meteorite"), ("a rabbit", "a hare"), ("a democracy", "a republic"),
        ("an ocean", "a sea"), ("a fruit", "a vegetable"), ("a moth", "a butterfly"), ("a poem", "a song"),
        ("a debit card", "a credit card"), ("a college", "a university"), ("a cyclone", "a tornado"),
        ("an emu", "an ostrich"), ("a bay", "a gulf"), ("weight", "mass"), ("a planet", "a star")]
DIFF_FORMS = ["How is {x} different from {y}?", "What makes {x} different from {y}?"]
BUSINESSES = ["a bakery", "a bookshop", "a dog grooming salon", "a bicycle shop", "a flower shop",
              "a yoga studio", "a food truck selling tacos", "an ice cream parlour", "a plant nursery",
              "a tutoring service", "a cleaning company", "a vegetarian restaurant", "a tea house",
              "a phone repair shop", "a board game café", "a pottery studio"]
BUSINESS_FORMS = ["Suggest three names for {x}.", "I'm opening {x}. Can you suggest a name and a slogan?"]
HISTORY = ["the fall of the Roman Empire", "the First World War", "the Great Depression", "the Cold War",
           "the American Revolution", "the end of the Soviet Union", "the Black Death",
           "the Age of Exploration", "the abolition of slavery", "the rise of the Ottoman Empire",
           "the Reformation", "the Space Race", "the building of the pyramids", "the Gold Rush"]
HISTORY_FORMS = ["Why did {x} happen? Answer in a few sentences.", "Give a short overview of {x}."]
MESSAGES = ["thanking a colleague for help with a project", "asking for a day off",
            "inviting friends to a birthday party", "congratulating a friend on a new job",
            "asking a teacher for an extension", "welcoming a new team member",
            "telling a customer their order is delayed", "reminding the team of a deadline",
            "asking a landlord to fix the heating", "saying goodbye to colleagues before leaving a job",
            "following up after a job interview", "asking a neighbour to water the plants"]
MESSAGE_FORMS = ["Write a short email {x}.", "Draft a friendly message {x}."]
OPINION = ["Do you think cats or dogs make better pets?", "What is the best season of the year, and why?",
           "Is it better to read the book or watch the film first?", "Should everyone learn to cook?",
           "What makes a good teacher?", "What makes a city a nice place to live?",
           "Why do people enjoy scary movies?", "What makes a friendship last?",
           "Is it worth learning to play an instrument as an adult?", "Why do people like to travel?",
           "What is a good way to spend a free Sunday?", "Why are board games still popular?"]

WRITING_MORE = ["a poem", "a short story", "a haiku", "a limerick", "a short fable with a moral",
                "a description", "a short letter", "a funny dialogue"]
WRITING_SUBJECTS = ["a clock tower", "a tired detective", "a city under the sea", "a garden gnome",
                    "a hot summer afternoon", "a clever crow", "a lonely satellite", "a school trip",
                    "a train at night", "a brave mouse", "a storm at sea", "a new puppy", "an old map",
                    "a hidden door", "a painter's studio", "a snowy village", "a talking tree",
                    "the first day of spring", "a lost letter", "a rooftop garden"]


def _take(r: random.Random, xs: list, k: int) -> list:
    return r.sample(xs, min(k, len(xs)))


def more_prompts(seed: int = 2) -> dict[str, list[str]]:
    """Prompts by category; the caller gives them ids after the first set's."""
    r = random.Random(seed)
    code, chat, writing = [], [], []
    for i, t in enumerate(PY_TASKS):
        for form in _take(r, PY_FORMS, 2):
            code.append(form.format(t=t))
        code.append(OTHER_LANG_FORMS[i % 2].format(lang=OTHER_LANGS[i % len(OTHER_LANGS)], t=t))
    for i, (n, m) in enumerate(CLASSES):
        code.append(CLASS_FORMS[0].format(n=n, m=m))
        code.append(CLASS_FORMS[1].format(n=n, m=m, lang=OTHER_LANGS[(i * 3) % len(OTHER_LANGS)]))
    code += [HOW_FORMS[i % 2].format(x=x) for i, x in enumerate(HOW_PY)]
    code += [f.format(t=t) for t in BASH for f in BASH_FORMS]
    code += [SQL_FORMS[i % 2].format(t=t) for i, t in enumerate(SQL_MORE)]
    code += [f.format(s=s) for s in BUGGY for f in BUGGY_FORMS]
    for i, s in enumerate(TRANSLATE):
        for lang in (TRANSLATE_TO[i % 6], TRANSLATE_TO[(i + 3) % 6]):
            code.append(f"Translate this Python code to {lang}:\n{s}")
    for x in CHAT_TOPICS:
        chat += [f.format(x=x) for f in _take(r, CHAT_FORMS, 3)]
    chat += [f.format(x=x) for x in KID for f in KID_FORMS]
    chat += [f.format(x=x) for x in PROS_CONS for f in PROS_CONS_FORMS]
    chat += [f.format(x=x) for x in TRIPS for f in TRIP_FORMS]
    chat += [f.format(x=x) for x in TIPS for f in _take(r, TIP_FORMS, 2)]
    chat += [f.format(x=x) for x in HOW_WORKS for f in HOW_WORKS_FORMS]
    chat += [f.format(x=x, y=y) for x, y in DIFF for f in DIFF_FORMS]
    chat += [f.format(x=x) for x in BUSINESSES for f in BUSINESS_FORMS]
    chat += [f.format(x=x) for x in HISTORY for f in HISTORY_FORMS]
    chat += [f.format(x=x) for x in MESSAGES for f in MESSAGE_FORMS]
    chat += OPINION
    for i, s in enumerate(WRITING_SUBJECTS):
        for j in range(3):
            writing.append(f"Write {WRITING_MORE[(i + 3 * j) % len(WRITING_MORE)]} about {s}.")
    return {"code": code, "chat": chat, "writing": writing}
