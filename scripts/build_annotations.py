"""Build ``annotations/<dataset>/{dataset.json,classes.jsonl}`` from Fine-R1's manifests.

Why a script: the class files join two sources that must agree exactly. Display names and the
seen/unseen split come from the paper's evaluation manifests (the only place they are defined);
the official label strings and label order come from each dataset's own files, which the loaders
parse on a user's machine. This script holds the official facts that the manifests do not carry
(orders, hierarchies, aliases), checks that every manifest name maps to exactly one official
class, and writes the files deterministically, so rerunning it reproduces them byte for byte::

    python scripts/build_annotations.py                      # reads annotations/fine_r1_eval
    python scripts/build_annotations.py --manifests /work/shared/reference/fine-r1/eval

Only facts are embedded below (label strings, orders, hierarchies); each list says where it was
taken from.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# --------------------------------------------------------------------------------------------
# FGVC-Aircraft 2013b (fgvc-aircraft-2013b.tar.gz). Variants in the order of data/variants.txt
# (100 lines), each with its family and manufacturer spelled as in data/families.txt (70) and
# data/manufacturers.txt (30). The variant -> family -> manufacturer links come from joining
# data/images_variant_test.txt with images_family_test.txt and images_manufacturer_test.txt on
# the image id (every test image of a variant carries the same family and manufacturer).
# --------------------------------------------------------------------------------------------
AIRCRAFT_VARIANTS: list[tuple[str, str, str]] = [
    ("707-320", "Boeing 707", "Boeing"),
    ("727-200", "Boeing 727", "Boeing"),
    ("737-200", "Boeing 737", "Boeing"),
    ("737-300", "Boeing 737", "Boeing"),
    ("737-400", "Boeing 737", "Boeing"),
    ("737-500", "Boeing 737", "Boeing"),
    ("737-600", "Boeing 737", "Boeing"),
    ("737-700", "Boeing 737", "Boeing"),
    ("737-800", "Boeing 737", "Boeing"),
    ("737-900", "Boeing 737", "Boeing"),
    ("747-100", "Boeing 747", "Boeing"),
    ("747-200", "Boeing 747", "Boeing"),
    ("747-300", "Boeing 747", "Boeing"),
    ("747-400", "Boeing 747", "Boeing"),
    ("757-200", "Boeing 757", "Boeing"),
    ("757-300", "Boeing 757", "Boeing"),
    ("767-200", "Boeing 767", "Boeing"),
    ("767-300", "Boeing 767", "Boeing"),
    ("767-400", "Boeing 767", "Boeing"),
    ("777-200", "Boeing 777", "Boeing"),
    ("777-300", "Boeing 777", "Boeing"),
    ("A300B4", "A300", "Airbus"),
    ("A310", "A310", "Airbus"),
    ("A318", "A320", "Airbus"),
    ("A319", "A320", "Airbus"),
    ("A320", "A320", "Airbus"),
    ("A321", "A320", "Airbus"),
    ("A330-200", "A330", "Airbus"),
    ("A330-300", "A330", "Airbus"),
    ("A340-200", "A340", "Airbus"),
    ("A340-300", "A340", "Airbus"),
    ("A340-500", "A340", "Airbus"),
    ("A340-600", "A340", "Airbus"),
    ("A380", "A380", "Airbus"),
    ("ATR-42", "ATR-42", "ATR"),
    ("ATR-72", "ATR-72", "ATR"),
    ("An-12", "An-12", "Antonov"),
    ("BAE 146-200", "BAE 146", "British Aerospace"),
    ("BAE 146-300", "BAE 146", "British Aerospace"),
    ("BAE-125", "BAE-125", "British Aerospace"),
    ("Beechcraft 1900", "Beechcraft 1900", "Beechcraft"),
    ("Boeing 717", "Boeing 717", "Boeing"),
    ("C-130", "C-130", "Lockheed Corporation"),
    ("C-47", "C-47", "Douglas Aircraft Company"),
    ("CRJ-200", "CRJ-200", "Canadair"),
    ("CRJ-700", "CRJ-700", "Canadair"),
    ("CRJ-900", "CRJ-700", "Canadair"),
    ("Cessna 172", "Cessna 172", "Cessna"),
    ("Cessna 208", "Cessna 208", "Cessna"),
    ("Cessna 525", "Cessna Citation", "Cessna"),
    ("Cessna 560", "Cessna Citation", "Cessna"),
    ("Challenger 600", "Challenger 600", "Canadair"),
    ("DC-10", "DC-10", "McDonnell Douglas"),
    ("DC-3", "DC-3", "Douglas Aircraft Company"),
    ("DC-6", "DC-6", "Douglas Aircraft Company"),
    ("DC-8", "DC-8", "Douglas Aircraft Company"),
    ("DC-9-30", "DC-9", "McDonnell Douglas"),
    ("DH-82", "DH-82", "de Havilland"),
    ("DHC-1", "DHC-1", "de Havilland"),
    ("DHC-6", "DHC-6", "de Havilland"),
    ("DHC-8-100", "Dash 8", "de Havilland"),
    ("DHC-8-300", "Dash 8", "de Havilland"),
    ("DR-400", "DR-400", "Robin"),
    ("Dornier 328", "Dornier 328", "Dornier"),
    ("E-170", "Embraer E-Jet", "Embraer"),
    ("E-190", "Embraer E-Jet", "Embraer"),
    ("E-195", "Embraer E-Jet", "Embraer"),
    ("EMB-120", "EMB-120", "Embraer"),
    ("ERJ 135", "Embraer ERJ 145", "Embraer"),
    ("ERJ 145", "Embraer ERJ 145", "Embraer"),
    ("Embraer Legacy 600", "Embraer Legacy 600", "Embraer"),
    ("Eurofighter Typhoon", "Eurofighter Typhoon", "Eurofighter"),
    ("F-16A/B", "F-16", "Lockheed Martin"),
    ("F/A-18", "F/A-18", "McDonnell Douglas"),
    ("Falcon 2000", "Falcon 2000", "Dassault Aviation"),
    ("Falcon 900", "Falcon 900", "Dassault Aviation"),
    ("Fokker 100", "Fokker 100", "Fokker"),
    ("Fokker 50", "Fokker 50", "Fokker"),
    ("Fokker 70", "Fokker 70", "Fokker"),
    ("Global Express", "Global Express", "Bombardier Aerospace"),
    ("Gulfstream IV", "Gulfstream", "Gulfstream Aerospace"),
    ("Gulfstream V", "Gulfstream", "Gulfstream Aerospace"),
    ("Hawk T1", "Hawk T1", "British Aerospace"),
    ("Il-76", "Il-76", "Ilyushin"),
    ("L-1011", "L-1011", "Lockheed Corporation"),
    ("MD-11", "MD-11", "McDonnell Douglas"),
    ("MD-80", "MD-80", "McDonnell Douglas"),
    ("MD-87", "MD-80", "McDonnell Douglas"),
    ("MD-90", "MD-90", "McDonnell Douglas"),
    ("Metroliner", "Metroliner", "Fairchild"),
    ("Model B200", "King Air", "Beechcraft"),
    ("PA-28", "PA-28", "Piper"),
    ("SR-20", "SR-20", "Cirrus Aircraft"),
    ("Saab 2000", "Saab 2000", "Saab"),
    ("Saab 340", "Saab 340", "Saab"),
    ("Spitfire", "Spitfire", "Supermarine"),
    ("Tornado", "Tornado", "Panavia"),
    ("Tu-134", "Tu-134", "Tupolev"),
    ("Tu-154", "Tu-154", "Tupolev"),
    ("Yak-42", "Yak-42", "Yakovlev"),
]

# Fine-R1 shows some variants with their maker in front ("Boeing 727-200", "Airbus A300B4").
AIRCRAFT_DISPLAY_PREFIXES = ("Boeing ", "Airbus ")

# Other spellings of a variant (keyed by official variant), each naming no other variant of the
# dataset. The official variant string itself is added automatically when it differs.
AIRCRAFT_ALIASES: dict[str, list[str]] = {
    "Boeing 717": ["MD-95"],
    "An-12": ["Antonov An-12"],
    "BAE 146-200": ["British Aerospace 146-200"],
    "BAE 146-300": ["British Aerospace 146-300"],
    "BAE-125": ["British Aerospace 125"],
    "Beechcraft 1900": ["Beech 1900"],
    "C-130": ["C-130 Hercules", "Lockheed C-130 Hercules"],
    "C-47": ["C-47 Skytrain", "Douglas C-47 Skytrain"],
    "CRJ-200": ["Bombardier CRJ-200", "Canadair CRJ-200"],
    "CRJ-700": ["Bombardier CRJ-700", "Canadair CRJ-700"],
    "CRJ-900": ["Bombardier CRJ-900", "Canadair CRJ-900"],
    "Cessna 172": ["Cessna 172 Skyhawk", "Cessna Skyhawk"],
    "Cessna 208": ["Cessna 208 Caravan", "Cessna Caravan"],
    "Cessna 525": ["Cessna CitationJet"],
    "Cessna 560": ["Cessna Citation V"],
    "Challenger 600": ["Canadair Challenger 600", "Bombardier Challenger 600"],
    "DC-10": ["McDonnell Douglas DC-10"],
    "DC-3": ["Douglas DC-3"],
    "DC-6": ["Douglas DC-6"],
    "DC-8": ["Douglas DC-8"],
    "DC-9-30": ["DC-9", "McDonnell Douglas DC-9-30"],
    "DH-82": ["Tiger Moth", "de Havilland Tiger Moth"],
    "DHC-1": ["Chipmunk", "de Havilland Canada Chipmunk"],
    "DHC-6": ["Twin Otter", "DHC-6 Twin Otter"],
    "DHC-8-100": ["Dash 8-100", "Dash 8 Q100"],
    "DHC-8-300": ["Dash 8-300", "Dash 8 Q300"],
    "DR-400": ["Robin DR400"],
    "Dornier 328": ["Do 328"],
    "E-170": ["Embraer 170", "Embraer E170"],
    "E-190": ["Embraer 190", "Embraer E190"],
    "E-195": ["Embraer 195", "Embraer E195"],
    "EMB-120": ["Embraer EMB 120 Brasilia", "Embraer Brasilia"],
    "ERJ 135": ["Embraer ERJ 135"],
    "ERJ 145": ["Embraer ERJ 145"],
    "Embraer Legacy 600": ["Legacy 600"],
    "Eurofighter Typhoon": ["Typhoon"],
    "F-16A/B": ["F-16", "F-16 Fighting Falcon"],
    "F/A-18": ["F-18", "FA-18", "F/A-18 Hornet"],
    "Falcon 2000": ["Dassault Falcon 2000"],
    "Falcon 900": ["Dassault Falcon 900"],
    "Global Express": ["Bombardier Global Express"],
    "Gulfstream IV": ["Gulfstream G-IV", "G-IV"],
    "Gulfstream V": ["Gulfstream G-V", "G-V"],
    "Hawk T1": ["BAE Hawk T1", "Hawk"],
    "Il-76": ["Ilyushin Il-76"],
    "L-1011": ["L-1011 TriStar", "Lockheed L-1011 TriStar", "TriStar"],
    "MD-11": ["McDonnell Douglas MD-11"],
    "MD-80": ["McDonnell Douglas MD-80"],
    "MD-87": ["McDonnell Douglas MD-87"],
    "MD-90": ["McDonnell Douglas MD-90"],
    "Metroliner": ["Fairchild Metroliner", "Swearingen Metroliner"],
    "Model B200": ["King Air B200", "Beechcraft King Air B200", "Beechcraft King Air", "King Air"],
    "PA-28": ["Piper PA-28", "Piper Cherokee"],
    "SR-20": ["Cirrus SR20"],
    "Spitfire": ["Supermarine Spitfire"],
    "Tornado": ["Panavia Tornado"],
    "Tu-134": ["Tupolev Tu-134"],
    "Tu-154": ["Tupolev Tu-154"],
    "Yak-42": ["Yakovlev Yak-42"],
}

# --------------------------------------------------------------------------------------------
# Stanford Cars: devkit/cars_meta.mat ``class_names`` in file order (class id = position + 1).
# The .mat file is binary; this is its content as reproduced in public class lists, e.g. the
# ``StanfordCars.CLASSES`` list of open-mmlab/mmclassification, cross-checked against a second,
# independent copy and against the 196 names of the Fine-R1 manifests.
# --------------------------------------------------------------------------------------------
CARS_CLASS_NAMES: list[str] = [
    "AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Acura TL Sedan 2012",
    "Acura TL Type-S 2008", "Acura TSX Sedan 2012", "Acura Integra Type R 2001",
    "Acura ZDX Hatchback 2012", "Aston Martin V8 Vantage Convertible 2012",
    "Aston Martin V8 Vantage Coupe 2012", "Aston Martin Virage Convertible 2012",
    "Aston Martin Virage Coupe 2012", "Audi RS 4 Convertible 2008", "Audi A5 Coupe 2012",
    "Audi TTS Coupe 2012", "Audi R8 Coupe 2012", "Audi V8 Sedan 1994", "Audi 100 Sedan 1994",
    "Audi 100 Wagon 1994", "Audi TT Hatchback 2011", "Audi S6 Sedan 2011",
    "Audi S5 Convertible 2012", "Audi S5 Coupe 2012", "Audi S4 Sedan 2012", "Audi S4 Sedan 2007",
    "Audi TT RS Coupe 2012", "BMW ActiveHybrid 5 Sedan 2012", "BMW 1 Series Convertible 2012",
    "BMW 1 Series Coupe 2012", "BMW 3 Series Sedan 2012", "BMW 3 Series Wagon 2012",
    "BMW 6 Series Convertible 2007", "BMW X5 SUV 2007", "BMW X6 SUV 2012", "BMW M3 Coupe 2012",
    "BMW M5 Sedan 2010", "BMW M6 Convertible 2010", "BMW X3 SUV 2012", "BMW Z4 Convertible 2012",
    "Bentley Continental Supersports Conv. Convertible 2012", "Bentley Arnage Sedan 2009",
    "Bentley Mulsanne Sedan 2011", "Bentley Continental GT Coupe 2012",
    "Bentley Continental GT Coupe 2007", "Bentley Continental Flying Spur Sedan 2007",
    "Bugatti Veyron 16.4 Convertible 2009", "Bugatti Veyron 16.4 Coupe 2009",
    "Buick Regal GS 2012", "Buick Rainier SUV 2007", "Buick Verano Sedan 2012",
    "Buick Enclave SUV 2012", "Cadillac CTS-V Sedan 2012", "Cadillac SRX SUV 2012",
    "Cadillac Escalade EXT Crew Cab 2007", "Chevrolet Silverado 1500 Hybrid Crew Cab 2012",
    "Chevrolet Corvette Convertible 2012", "Chevrolet Corvette ZR1 2012",
    "Chevrolet Corvette Ron Fellows Edition Z06 2007", "Chevrolet Traverse SUV 2012",
    "Chevrolet Camaro Convertible 2012", "Chevrolet HHR SS 2010", "Chevrolet Impala Sedan 2007",
    "Chevrolet Tahoe Hybrid SUV 2012", "Chevrolet Sonic Sedan 2012",
    "Chevrolet Express Cargo Van 2007", "Chevrolet Avalanche Crew Cab 2012",
    "Chevrolet Cobalt SS 2010", "Chevrolet Malibu Hybrid Sedan 2010",
    "Chevrolet TrailBlazer SS 2009", "Chevrolet Silverado 2500HD Regular Cab 2012",
    "Chevrolet Silverado 1500 Classic Extended Cab 2007", "Chevrolet Express Van 2007",
    "Chevrolet Monte Carlo Coupe 2007", "Chevrolet Malibu Sedan 2007",
    "Chevrolet Silverado 1500 Extended Cab 2012", "Chevrolet Silverado 1500 Regular Cab 2012",
    "Chrysler Aspen SUV 2009", "Chrysler Sebring Convertible 2010",
    "Chrysler Town and Country Minivan 2012", "Chrysler 300 SRT-8 2010",
    "Chrysler Crossfire Convertible 2008", "Chrysler PT Cruiser Convertible 2008",
    "Daewoo Nubira Wagon 2002", "Dodge Caliber Wagon 2012", "Dodge Caliber Wagon 2007",
    "Dodge Caravan Minivan 1997", "Dodge Ram Pickup 3500 Crew Cab 2010",
    "Dodge Ram Pickup 3500 Quad Cab 2009", "Dodge Sprinter Cargo Van 2009",
    "Dodge Journey SUV 2012", "Dodge Dakota Crew Cab 2010", "Dodge Dakota Club Cab 2007",
    "Dodge Magnum Wagon 2008", "Dodge Challenger SRT8 2011", "Dodge Durango SUV 2012",
    "Dodge Durango SUV 2007", "Dodge Charger Sedan 2012", "Dodge Charger SRT-8 2009",
    "Eagle Talon Hatchback 1998", "FIAT 500 Abarth 2012", "FIAT 500 Convertible 2012",
    "Ferrari FF Coupe 2012", "Ferrari California Convertible 2012",
    "Ferrari 458 Italia Convertible 2012", "Ferrari 458 Italia Coupe 2012",
    "Fisker Karma Sedan 2012", "Ford F-450 Super Duty Crew Cab 2012",
    "Ford Mustang Convertible 2007", "Ford Freestar Minivan 2007", "Ford Expedition EL SUV 2009",
    "Ford Edge SUV 2012", "Ford Ranger SuperCab 2011", "Ford GT Coupe 2006",
    "Ford F-150 Regular Cab 2012", "Ford F-150 Regular Cab 2007", "Ford Focus Sedan 2007",
    "Ford E-Series Wagon Van 2012", "Ford Fiesta Sedan 2012", "GMC Terrain SUV 2012",
    "GMC Savana Van 2012", "GMC Yukon Hybrid SUV 2012", "GMC Acadia SUV 2012",
    "GMC Canyon Extended Cab 2012", "Geo Metro Convertible 1993", "HUMMER H3T Crew Cab 2010",
    "HUMMER H2 SUT Crew Cab 2009", "Honda Odyssey Minivan 2012", "Honda Odyssey Minivan 2007",
    "Honda Accord Coupe 2012", "Honda Accord Sedan 2012", "Hyundai Veloster Hatchback 2012",
    "Hyundai Santa Fe SUV 2012", "Hyundai Tucson SUV 2012", "Hyundai Veracruz SUV 2012",
    "Hyundai Sonata Hybrid Sedan 2012", "Hyundai Elantra Sedan 2007", "Hyundai Accent Sedan 2012",
    "Hyundai Genesis Sedan 2012", "Hyundai Sonata Sedan 2012",
    "Hyundai Elantra Touring Hatchback 2012", "Hyundai Azera Sedan 2012",
    "Infiniti G Coupe IPL 2012", "Infiniti QX56 SUV 2011", "Isuzu Ascender SUV 2008",
    "Jaguar XK XKR 2012", "Jeep Patriot SUV 2012", "Jeep Wrangler SUV 2012",
    "Jeep Liberty SUV 2012", "Jeep Grand Cherokee SUV 2012", "Jeep Compass SUV 2012",
    "Lamborghini Reventon Coupe 2008", "Lamborghini Aventador Coupe 2012",
    "Lamborghini Gallardo LP 570-4 Superleggera 2012", "Lamborghini Diablo Coupe 2001",
    "Land Rover Range Rover SUV 2012", "Land Rover LR2 SUV 2012", "Lincoln Town Car Sedan 2011",
    "MINI Cooper Roadster Convertible 2012", "Maybach Landaulet Convertible 2012",
    "Mazda Tribute SUV 2011", "McLaren MP4-12C Coupe 2012",
    "Mercedes-Benz 300-Class Convertible 1993", "Mercedes-Benz C-Class Sedan 2012",
    "Mercedes-Benz SL-Class Coupe 2009", "Mercedes-Benz E-Class Sedan 2012",
    "Mercedes-Benz S-Class Sedan 2012", "Mercedes-Benz Sprinter Van 2012",
    "Mitsubishi Lancer Sedan 2012", "Nissan Leaf Hatchback 2012", "Nissan NV Passenger Van 2012",
    "Nissan Juke Hatchback 2012", "Nissan 240SX Coupe 1998", "Plymouth Neon Coupe 1999",
    "Porsche Panamera Sedan 2012", "Ram C/V Cargo Van Minivan 2012",
    "Rolls-Royce Phantom Drophead Coupe Convertible 2012", "Rolls-Royce Ghost Sedan 2012",
    "Rolls-Royce Phantom Sedan 2012", "Scion xD Hatchback 2012", "Spyker C8 Convertible 2009",
    "Spyker C8 Coupe 2009", "Suzuki Aerio Sedan 2007", "Suzuki Kizashi Sedan 2012",
    "Suzuki SX4 Hatchback 2012", "Suzuki SX4 Sedan 2012", "Tesla Model S Sedan 2012",
    "Toyota Sequoia SUV 2012", "Toyota Camry Sedan 2012", "Toyota Corolla Sedan 2012",
    "Toyota 4Runner SUV 2012", "Volkswagen Golf Hatchback 2012", "Volkswagen Golf Hatchback 1991",
    "Volkswagen Beetle Hatchback 2012", "Volvo C30 Hatchback 2012", "Volvo 240 Sedan 1993",
    "Volvo XC90 SUV 2007", "smart fortwo Convertible 2012",
]  # fmt: skip

# Makes of more than one word; every other make is the first token ("Mercedes-Benz", "smart").
CAR_MULTIWORD_MAKES = ("AM General", "Aston Martin", "Land Rover")
# Body types as the class names spell them, longest first so "Cargo Van" wins over "Van".
CAR_BODY_TYPES = (
    "Extended Cab", "Regular Cab", "Passenger Van", "Cargo Van", "Crew Cab", "Quad Cab",
    "Club Cab", "SuperCab", "Convertible", "Hatchback", "Minivan", "Coupe", "Sedan", "Wagon",
    "SUV", "Van",
)  # fmt: skip
# Names with a trim ("Type-S", "SRT-8", "ZR1") and no body word say nothing about the body.
CAR_NO_BODY_TYPE = "other"
# Folder-safe spelling used by copies of the dataset sorted into one folder per class.
CAR_ALIASES: dict[str, list[str]] = {
    "Ram C/V Cargo Van Minivan 2012": ["Ram C-V Cargo Van Minivan 2012"],
}

# --------------------------------------------------------------------------------------------
# Oxford Flowers-102: imagelabels.mat holds labels 1..102 and no names. The names below are the
# widely copied label-order list (first published with jimgoo/caffe-oxford102; also Udacity's
# cat_to_name.json, torchvision's Flowers102.classes), in the spellings of the Fine-R1 manifests.
# ALIASES keep the other spellings of the common copies ("globe-flower", "pink-yellow dahlia",
# "ball moss") and correct ones ("barberton daisy").
# --------------------------------------------------------------------------------------------
FLOWER_NAMES: list[str] = [
    "pink primrose", "hard-leaved pocket orchid", "canterbury bells", "sweet pea",
    "english marigold", "tiger lily", "moon orchid", "bird of paradise", "monkshood",
    "globe thistle", "snapdragon", "colt's foot", "king protea", "spear thistle", "yellow iris",
    "globe flower", "purple coneflower", "peruvian lily", "balloon flower",
    "giant white arum lily", "fire lily", "pincushion flower", "fritillary", "red ginger",
    "grape hyacinth", "corn poppy", "prince of wales feathers", "stemless gentian", "artichoke",
    "sweet william", "carnation", "garden phlox", "love in the mist", "mexican aster",
    "alpine sea holly", "ruby-lipped cattleya", "cape flower", "great masterwort", "siam tulip",
    "lenten rose", "barbeton daisy", "daffodil", "sword lily", "poinsettia", "bolero deep blue",
    "wallflower", "marigold", "buttercup", "oxeye daisy", "common dandelion", "petunia",
    "wild pansy", "primula", "sunflower", "pelargonium", "bishop of llandaff", "gaura",
    "geranium", "orange dahlia", "pink and yellow dahlia", "cautleya spicata", "japanese anemone",
    "black-eyed susan", "silverbush", "californian poppy", "osteospermum", "spring crocus",
    "bearded iris", "windflower", "tree poppy", "gazania", "azalea", "water lily", "rose",
    "thorn apple", "morning glory", "passion flower", "lotus", "toad lily", "anthurium",
    "frangipani", "clematis", "hibiscus", "columbine", "desert-rose", "tree mallow", "magnolia",
    "cyclamen", "watercress", "canna lily", "hippeastrum", "bee balm", "air plant", "foxglove",
    "bougainvillea", "camellia", "mallow", "mexican petunia", "bromelia", "blanket flower",
    "trumpet creeper", "blackberry lily",
]  # fmt: skip
FLOWER_ALIASES: dict[str, list[str]] = {
    "globe flower": ["globe-flower"],
    "pink and yellow dahlia": ["pink-yellow dahlia"],
    "air plant": ["ball moss"],
    "barbeton daisy": ["barberton daisy"],
    "bromelia": ["bromeliad"],
    "colt's foot": ["coltsfoot"],
    "sword lily": ["gladiolus"],
}
# A trailing word that names no group of flowers ("globe flower" and "passion flower" are
# unrelated), so such names stay in a group of their own.
FLOWER_GENERIC_HEADS = frozenset({"flower"})

# --------------------------------------------------------------------------------------------
# CUB-200-2011: labels, ids and order come from the folder names in the manifests' image paths
# (``images/<nnn.Class_Name>/``, the same strings as classes.txt). Aliases: the common English
# spellings the dataset's names flatten (possessives, "Arctic").
# --------------------------------------------------------------------------------------------
CUB_ALIASES: dict[str, list[str]] = {
    "Anna Hummingbird": ["Anna's Hummingbird"],
    "Artic Tern": ["Arctic Tern"],
    "Baird Sparrow": ["Baird's Sparrow"],
    "Bewick Wren": ["Bewick's Wren"],
    "Brandt Cormorant": ["Brandt's Cormorant"],
    "Brewer Blackbird": ["Brewer's Blackbird"],
    "Brewer Sparrow": ["Brewer's Sparrow"],
    "Cardinal": ["Northern Cardinal"],
    "Chuck Will Widow": ["Chuck-will's-widow"],
    "Clark Nutcracker": ["Clark's Nutcracker"],
    "Florida Jay": ["Florida Scrub Jay"],
    "Forsters Tern": ["Forster's Tern"],
    "Geococcyx": ["Greater Roadrunner", "Roadrunner"],
    "Harris Sparrow": ["Harris's Sparrow"],
    "Heermann Gull": ["Heermann's Gull"],
    "Henslow Sparrow": ["Henslow's Sparrow"],
    "Le Conte Sparrow": ["Le Conte's Sparrow", "LeConte's Sparrow"],
    "Lincoln Sparrow": ["Lincoln's Sparrow"],
    "Mockingbird": ["Northern Mockingbird"],
    "Myrtle Warbler": ["Yellow-rumped Warbler"],
    "Nelson Sharp Tailed Sparrow": ["Nelson's Sharp-tailed Sparrow", "Nelson's Sparrow"],
    "Nighthawk": ["Common Nighthawk"],
    "Sayornis": ["Phoebe"],
    "Scott Oriole": ["Scott's Oriole"],
    "Swainson Warbler": ["Swainson's Warbler"],
    "Tree Sparrow": ["American Tree Sparrow"],
    "Whip Poor Will": ["Whip-poor-will"],
    "Wilson Warbler": ["Wilson's Warbler"],
}
# Names whose last word is no group: the three nightjars, and two dabbling ducks.
CUB_GROUP_OVERRIDES: dict[str, str] = {
    "Chuck Will Widow": "Nightjar",
    "Whip Poor Will": "Nightjar",
    "Nighthawk": "Nightjar",
    "Mallard": "Duck",
    "Gadwall": "Duck",
}

# --------------------------------------------------------------------------------------------
# Stanford Dogs: labels are the Images/<wnid>-<Breed> folder names from the manifests' image
# paths; lists/{train,test}_list.mat number them 1..120 in sorted folder order. Aliases: the
# breed's full or current common name where the dataset (from ImageNet) uses a short one.
# --------------------------------------------------------------------------------------------
DOG_ALIASES: dict[str, list[str]] = {
    "African Hunting Dog": ["African Wild Dog"],
    "Airedale": ["Airedale Terrier"],
    "American Staffordshire Terrier": ["AmStaff"],
    "Appenzeller": ["Appenzeller Sennenhund"],
    "Basset": ["Basset Hound"],
    "Bernese Mountain Dog": ["Berner Sennenhund"],
    "Bluetick": ["Bluetick Coonhound"],
    "Borzoi": ["Russian Wolfhound"],
    "Boston Bull": ["Boston Terrier"],
    "Brabancon Griffon": ["Petit Brabancon"],
    "Brittany Spaniel": ["Brittany"],
    "Bull Mastiff": ["Bullmastiff"],
    "Cairn": ["Cairn Terrier"],
    "Cardigan": ["Cardigan Welsh Corgi"],
    "Chow": ["Chow Chow"],
    "Clumber": ["Clumber Spaniel"],
    "Collie": ["Rough Collie"],
    "Dandie Dinmont": ["Dandie Dinmont Terrier"],
    "Doberman": ["Doberman Pinscher", "Dobermann"],
    "English Springer": ["English Springer Spaniel"],
    "Entlebucher": ["Entlebucher Mountain Dog"],
    "German Shepherd": ["German Shepherd Dog"],
    "German Short Haired Pointer": ["German Shorthaired Pointer"],
    "Great Pyrenees": ["Pyrenean Mountain Dog"],
    "Groenendael": ["Belgian Sheepdog"],
    "Irish Setter": ["Red Setter"],
    "Japanese Spaniel": ["Japanese Chin"],
    "Kelpie": ["Australian Kelpie"],
    "Labrador Retriever": ["Labrador"],
    "Leonberg": ["Leonberger"],
    "Lhasa": ["Lhasa Apso"],
    "Malamute": ["Alaskan Malamute"],
    "Malinois": ["Belgian Malinois"],
    "Maltese Dog": ["Maltese"],
    "Mexican Hairless": ["Xoloitzcuintli"],
    "Newfoundland": ["Newfoundland Dog"],
    "Pekinese": ["Pekingese"],
    "Pembroke": ["Pembroke Welsh Corgi"],
    "Redbone": ["Redbone Coonhound"],
    "Saint Bernard": ["St. Bernard"],
    "Scotch Terrier": ["Scottish Terrier", "Scottie"],
    "Scottish Deerhound": ["Deerhound"],
    "Shetland Sheepdog": ["Sheltie"],
    "Silky Terrier": ["Australian Silky Terrier"],
    "Soft Coated Wheaten Terrier": ["Wheaten Terrier"],
    "Staffordshire Bullterrier": ["Staffordshire Bull Terrier"],
    "Vizsla": ["Hungarian Vizsla"],
    "Walker Hound": ["Treeing Walker Coonhound"],
    "West Highland White Terrier": ["Westie"],
    "Wire Haired Fox Terrier": ["Wire Fox Terrier"],
    "Yorkshire Terrier": ["Yorkie"],
}
# Type words that name a group of breeds; a word ending in one of the compound suffixes
# ("Bloodhound", "Affenpinscher", "Bullmastiff") belongs to that group too.
DOG_TYPE_WORDS = (
    "Mountain Dog", "Terrier", "Spaniel", "Retriever", "Setter", "Pointer", "Hound",
    "Sheepdog", "Shepherd", "Collie", "Schnauzer", "Poodle", "Pinscher", "Mastiff", "Bulldog",
    "Corgi", "Griffon", "Husky",
)  # fmt: skip
DOG_COMPOUND_SUFFIXES = ("hound", "terrier", "pinscher", "mastiff")

# --------------------------------------------------------------------------------------------
# Oxford-IIIT Pet: labels are the breed prefixes of images/<Breed>_<n>.jpg (as in
# annotations/list.txt); class ids 1..37 follow the breeds' case-insensitive alphabetical order,
# and cat breeds are the capitalised ones (list.txt header: "All images with 1st letter as
# captial are cat images"; its SPECIES column, 1 = cat, 2 = dog, agrees).
# --------------------------------------------------------------------------------------------
PET_ALIASES: dict[str, list[str]] = {
    "Basset Hound": ["Basset"],
    "English Cocker Spaniel": ["Cocker Spaniel"],
    "German Shorthaired": ["German Shorthaired Pointer"],
    "Great Pyrenees": ["Pyrenean Mountain Dog"],
    "Japanese Chin": ["Japanese Spaniel"],
    "Newfoundland": ["Newfoundland Dog"],
    "Saint Bernard": ["St. Bernard"],
    "Scottish Terrier": ["Scotch Terrier", "Scottie"],
    "Shiba Inu": ["Shiba"],
    "Wheaten Terrier": ["Soft Coated Wheaten Terrier"],
    "Yorkshire Terrier": ["Yorkie"],
}

PROVENANCE = (
    "Display names and paper_split: Fine-R1 (ICLR 2026, arXiv 2602.07605, "
    "PKU-ICST-MIPL/FineR1_ICLR2026) evaluation manifests, copied in annotations/fine_r1_eval/. "
    "Labels, order and hierarchy: {official}. Generated by scripts/build_annotations.py."
)


@dataclass
class ClassRow:
    """One line of classes.jsonl, before it is written."""

    index: int
    label: str
    name: str
    aliases: list[str] = field(default_factory=list)
    hierarchy: list[str] = field(default_factory=list)
    paper_split: str = ""

    def as_json(self) -> str:
        return json.dumps(
            {
                "index": self.index,
                "label": self.label,
                "name": self.name,
                "aliases": self.aliases,
                "hierarchy": self.hierarchy,
                "paper_split": self.paper_split,
            },
            ensure_ascii=False,
        )


@dataclass(frozen=True)
class Manifests:
    """What one dataset's pair of Fine-R1 manifests says: each name's split and image paths."""

    split: dict[str, str]
    paths: dict[str, set[str]]
    options: set[str]


def read_manifests(folder: Path, prefix: str) -> Manifests:
    split: dict[str, str] = {}
    paths: dict[str, set[str]] = {}
    options: set[str] = set()
    for part in ("seen", "unseen"):
        with (folder / f"{prefix}_{part}.jsonl").open(encoding="utf-8") as lines:
            for line in lines:
                row = json.loads(line)
                name = row["ground_truth"]
                if split.setdefault(name, part) != part:
                    msg = f"{prefix}: {name!r} is ground truth in both seen and unseen"
                    raise SystemExit(msg)
                paths.setdefault(name, set()).add(row["image_path"])
                options.update(row["options"])
    return Manifests(split=split, paths=paths, options=options)


def alias_key(text: str) -> str:
    """Case- and separator-insensitive form used to keep aliases unambiguous."""
    return re.sub(r"[\s_\-]+", "", text.casefold())


def aliases_for(name: str, candidates: list[str]) -> list[str]:
    """Candidates in order, without duplicates and without the display name itself."""
    out: list[str] = []
    for alias in candidates:
        if alias != name and alias not in out:
            out.append(alias)
    return out


def head_groups(names: list[str], head: Callable[[str], str | None]) -> dict[str, str]:
    """Map each name to its head-noun group, or to itself when no other class shares it.

    A group with one member says nothing about similarity between classes, and a catch-all
    bucket would claim false siblings, so such classes form their own group.
    """
    heads = {name: head(name) for name in names}
    sizes = Counter(h for h in heads.values() if h)
    return {name: h if h and sizes[h] > 1 else name for name, h in heads.items()}


def single_folder(name: str, paths: set[str], depth: int) -> str:
    """The class folder (``depth`` components above the file) shared by all of a name's images."""
    folders = {p.split("/")[-1 - depth] for p in paths}
    if len(folders) != 1:
        msg = f"{name!r} appears under several folders: {sorted(folders)}"
        raise SystemExit(msg)
    return folders.pop()


def build_aircraft(m: Manifests) -> list[ClassRow]:
    variants = [v for v, _, _ in AIRCRAFT_VARIANTS]
    by_variant: dict[str, str] = {}
    for name in m.split:
        matches = [v for v in variants if name == v]
        matches += [v for v in variants for p in AIRCRAFT_DISPLAY_PREFIXES if name == p + v]
        if len(matches) != 1:
            msg = f"aircraft: {name!r} matches variants {matches}"
            raise SystemExit(msg)
        by_variant[matches[0]] = name
    rows = []
    for index, (variant, family, manufacturer) in enumerate(AIRCRAFT_VARIANTS):
        name = by_variant[variant]
        aliases = aliases_for(name, [variant, *AIRCRAFT_ALIASES.get(variant, [])])
        rows.append(ClassRow(index, variant, name, aliases, [manufacturer, family], m.split[name]))
    return rows


def car_hierarchy(name: str) -> list[str]:
    """``[make, model, body type]`` parsed from a class name such as "Acura TL Sedan 2012"."""
    text, _year = name.rsplit(" ", 1)
    make = next((mk for mk in CAR_MULTIWORD_MAKES if text.startswith(mk + " ")), None)
    make = make or text.split(" ", 1)[0]
    rest = text[len(make) + 1 :]
    body = next((b for b in CAR_BODY_TYPES if rest.endswith(" " + b)), None)
    if body is not None:
        return [make, rest[: -len(body) - 1], body]
    # A body word before a trim ("G Coupe IPL") still names the body; the model keeps it.
    inner = next((b for b in CAR_BODY_TYPES if f" {b} " in f" {rest} "), CAR_NO_BODY_TYPE)
    return [make, rest, inner]


def build_cars(m: Manifests) -> list[ClassRow]:
    return [
        ClassRow(
            index,
            label,
            label,
            aliases_for(label, CAR_ALIASES.get(label, [])),
            car_hierarchy(label),
            m.split[label],
        )
        for index, label in enumerate(CARS_CLASS_NAMES)
    ]


def build_cub(m: Manifests) -> list[ClassRow]:
    label_of = {name: single_folder(name, paths, 1) for name, paths in m.paths.items()}
    names = sorted(m.split, key=lambda name: label_of[name])
    groups = head_groups(names, lambda n: CUB_GROUP_OVERRIDES.get(n, n.split()[-1]))
    rows = []
    for name in names:
        label = label_of[name]
        index = int(label.split(".", 1)[0]) - 1
        aliases = aliases_for(name, CUB_ALIASES.get(name, []))
        rows.append(ClassRow(index, label, name, aliases, [groups[name]], m.split[name]))
    return rows


def dog_type(name: str) -> str | None:
    """The breed-group word of a dog name, also found inside compounds ("Bloodhound")."""
    for word in DOG_TYPE_WORDS:
        if name.endswith(" " + word) or name == word:
            return word
    last = name.split()[-1].lower()
    for suffix in DOG_COMPOUND_SUFFIXES:
        if last.endswith(suffix):
            return suffix.capitalize()
    return None


def build_dogs(m: Manifests) -> list[ClassRow]:
    label_of = {name: single_folder(name, paths, 1) for name, paths in m.paths.items()}
    names = sorted(m.split, key=lambda name: label_of[name])

    def group_word(name: str) -> str | None:
        # Short names ("Cairn") drop the type word that their full names ("Cairn Terrier") keep;
        # other common names ("Pyrenean Mountain Dog") may put the breed in a different type.
        first = name.split()[0]
        full_names = [a for a in DOG_ALIASES.get(name, []) if a.split()[0] == first]
        return next((w for w in map(dog_type, [name, *full_names]) if w), None)

    groups = head_groups(names, group_word)
    rows = []
    for index, name in enumerate(names):
        label = label_of[name]
        breed = label.split("-", 1)[1].replace("_", " ")
        aliases = aliases_for(name, [breed, *DOG_ALIASES.get(name, [])])
        rows.append(ClassRow(index, label, name, aliases, [groups[name]], m.split[name]))
    return rows


def build_flowers(m: Manifests) -> list[ClassRow]:
    def head(name: str) -> str | None:
        last = name.split()[-1]
        return None if last in FLOWER_GENERIC_HEADS else last

    groups = head_groups(FLOWER_NAMES, head)
    return [
        ClassRow(
            index,
            str(index + 1),
            name,
            aliases_for(name, FLOWER_ALIASES.get(name, [])),
            [groups[name]],
            m.split[name],
        )
        for index, name in enumerate(FLOWER_NAMES)
    ]


def build_pets(m: Manifests) -> list[ClassRow]:
    label_of = {}
    for name, paths in m.paths.items():
        breeds = {p.rsplit("/", 1)[-1].rsplit("_", 1)[0] for p in paths}
        if len(breeds) != 1:
            msg = f"pets: {name!r} has images of several breeds: {sorted(breeds)}"
            raise SystemExit(msg)
        label_of[name] = breeds.pop()
    names = sorted(m.split, key=lambda name: label_of[name].lower())
    rows = []
    for index, name in enumerate(names):
        label = label_of[name]
        species = "cat" if label[0].isupper() else "dog"
        candidates = [label.replace("_", " "), *PET_ALIASES.get(name, [])]
        if species == "cat":
            candidates.append(f"{name} cat")
        rows.append(
            ClassRow(index, label, name, aliases_for(name, candidates), [species], m.split[name])
        )
    return rows


@dataclass(frozen=True)
class Spec:
    """How to build one dataset's annotations."""

    name: str
    manifest_prefix: str
    title: str
    super_category: str
    hierarchy_levels: tuple[str, ...]
    hierarchy_source: str
    official: str
    build: Callable[[Manifests], list[ClassRow]]
    size: int


SPECS = (
    Spec(
        "aircraft", "aircraft", "FGVC-Aircraft 2013b", "aircraft", ("manufacturer", "family"),
        "official: data/families.txt and data/manufacturers.txt, linked to variants through "
        "data/images_{family,manufacturer}_test.txt",
        "data/variants.txt (label = variant string, index = line number - 1)",
        build_aircraft, 100,
    ),
    Spec(
        "cub", "bird", "CUB-200-2011", "bird", ("group",),
        "derived, not official: head noun of the name (Albatross, Gull, Warbler, ...); "
        "Chuck-will's-widow, Whip-poor-will and Nighthawk -> Nightjar, Mallard and Gadwall -> "
        "Duck; a class whose head noun no other class shares is its own group",
        "classes.txt / images/<nnn.Class_Name>/ (label = folder name, index = class id - 1)",
        build_cub, 200,
    ),
    Spec(
        "cars", "car", "Stanford Cars", "car", ("make", "model", "body type"),
        "derived, not official: parsed from the class name '<make> <model> <body type> <year>' "
        "(multi-word makes: AM General, Aston Martin, Land Rover); a body word followed by a "
        "trim ('Infiniti G Coupe IPL') still gives the body type; names with a trim and no body "
        "word (Type-S, SRT-8, SS, ZR1, ...) get body type 'other'; the year stays part of the "
        "class",
        "devkit/cars_meta.mat class_names (label = class name, index = class id - 1)",
        build_cars, 196,
    ),
    Spec(
        "dogs", "dog", "Stanford Dogs", "dog", ("group",),
        "derived, not official: breed type word of the name, or of the full name it shortens "
        "(Cairn -> Cairn Terrier): Terrier, Spaniel, Retriever, Setter, Hound (incl. "
        "Bloodhound, Wolfhound), Pinscher, Mountain Dog, ...; a breed whose type no other "
        "class shares is its own group",
        "Images/<wnid>-<Breed>/ folders, numbered 1..120 in sorted order by lists/*.mat "
        "(label = folder name, index = position in sorted order)",
        build_dogs, 120,
    ),
    Spec(
        "flowers", "flower", "Oxford Flowers-102", "flower", ("group",),
        "derived, not official: last word of the name when other classes share it (lily, "
        "orchid, thistle, iris, poppy, daisy, dahlia, ...; not the generic 'flower'); other "
        "classes are their own group",
        "imagelabels.mat labels 1..102 (label = number as text, index = label - 1); the "
        "official files carry no names, names follow the widely used label-order list",
        build_flowers, 102,
    ),
    Spec(
        "pets", "pet", "Oxford-IIIT Pet", "pet", ("species",),
        "official: SPECIES column of annotations/list.txt (1 = cat, 2 = dog)",
        "annotations/list.txt (label = breed prefix of the image names, index = CLASS-ID - 1)",
        build_pets, 37,
    ),
)  # fmt: skip


def check(spec: Spec, rows: list[ClassRow], m: Manifests) -> None:
    """Refuse to write annotations that disagree with the manifests or with themselves."""
    problems = []
    if len(rows) != spec.size:
        problems.append(f"{len(rows)} classes, expected {spec.size}")
    if [r.index for r in rows] != list(range(len(rows))):
        problems.append("indexes are not 0..N-1 in order")
    if len({r.label for r in rows}) != len(rows):
        problems.append("labels are not unique")
    names = {r.name for r in rows}
    if names != set(m.split):
        problems.append(f"names differ from manifests: {sorted(names ^ set(m.split))}")
    if not m.options <= names:
        problems.append(f"options that are no class: {sorted(m.options - names)}")
    owner: dict[str, int] = {}
    for row in rows:
        for text in {alias_key(t) for t in [row.name, *row.aliases]}:
            if owner.setdefault(text, row.index) != row.index:
                problems.append(f"{text!r} names classes {owner[text]} and {row.index}")
        if len(row.hierarchy) != len(spec.hierarchy_levels):
            problems.append(f"{row.name!r} hierarchy {row.hierarchy} does not fit the levels")
    if problems:
        raise SystemExit(f"{spec.name}: " + "; ".join(problems))


def write(spec: Spec, rows: list[ClassRow], out: Path) -> None:
    folder = out / spec.name
    folder.mkdir(parents=True, exist_ok=True)
    meta = {
        "name": spec.name,
        "title": spec.title,
        "super_category": spec.super_category,
        "hierarchy_levels": list(spec.hierarchy_levels),
        "hierarchy_source": spec.hierarchy_source,
        "provenance": PROVENANCE.format(official=spec.official),
    }
    dataset_json = json.dumps(meta, ensure_ascii=False, indent=2) + "\n"
    (folder / "dataset.json").write_text(dataset_json, encoding="utf-8")
    lines = "".join(row.as_json() + "\n" for row in rows)
    (folder / "classes.jsonl").write_text(lines, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--manifests",
        type=Path,
        default=ROOT / "annotations" / "fine_r1_eval",
        help="folder with the Fine-R1 {dataset}_{seen,unseen}.jsonl manifests",
    )
    parser.add_argument(
        "--out", type=Path, default=ROOT / "annotations", help="annotations folder to write"
    )
    args = parser.parse_args()
    for spec in SPECS:
        manifests = read_manifests(args.manifests, spec.manifest_prefix)
        rows = spec.build(manifests)
        check(spec, rows, manifests)
        write(spec, rows, args.out)
        seen = sum(row.paper_split == "seen" for row in rows)
        print(f"{spec.name}: {len(rows)} classes ({seen} seen, {len(rows) - seen} unseen)")


if __name__ == "__main__":
    main()
